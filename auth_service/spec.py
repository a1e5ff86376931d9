"""The OpenAPI contract, loaded once per process into per-operation validators.

openapi-core's request/response validators walk the whole spec on every call (~4 ms a
request). We build each operation's schema validators once here, with openapi-core's own
schema validator factory, so a request pays only for the schema checks themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from jsonschema.exceptions import ValidationError as SchemaError
from jsonschema_path import SchemaPath
from openapi_core import OpenAPI
from openapi_core.validation.schemas import oas31_schema_validators_factory
from openapi_core.validation.schemas.validators import SchemaValidator

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class FieldError:
    """One schema violation, described only by schema facts, never by the input."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The problem+json `errors` entry."""
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Parameter:
    """A query or path parameter with its prebuilt validator."""

    name: str
    location: str
    required: bool
    schema_type: str
    default: Any
    validator: SchemaValidator


@dataclass(frozen=True)
class ResponseContract:
    """What one status of an operation may carry."""

    content: dict[str, SchemaValidator | None]
    required_headers: tuple[str, ...]


@dataclass(frozen=True)
class Operation:
    """One operation of the spec, with everything validation needs resolved up front."""

    operation_id: str
    method: str
    path: str
    tag: str
    public: bool
    parameters: tuple[Parameter, ...]
    body_required: bool
    body_validator: SchemaValidator | None
    responses: dict[int, ResponseContract] = field(repr=False)

    @property
    def has_body(self) -> bool:
        """Whether the operation declares a JSON request body."""
        return self.body_validator is not None


class Contract:
    """The parsed spec: its raw document, its JSON text and its operations."""

    def __init__(self, document: dict[str, Any]) -> None:
        # NOTE: OpenAPI.from_dict validates the document with openapi-spec-validator.
        self.openapi = OpenAPI.from_dict(document)
        self.document = document
        self.operations = tuple(self._build_operations())

    @classmethod
    def from_file(cls, path: Path) -> Contract:
        """Load and validate the spec file."""
        with path.open(encoding="utf-8") as handle:
            return cls(yaml.safe_load(handle))

    @cached_property
    def json_bytes(self) -> bytes:
        """The spec as served at /openapi.json."""
        return json.dumps(self.document).encode()

    def by_operation_id(self) -> dict[str, Operation]:
        """Operations keyed by operationId."""
        return {op.operation_id: op for op in self.operations}

    def _build_operations(self) -> Iterator[Operation]:
        spec = self.openapi.spec
        paths = spec / "paths"
        for path in self.document["paths"]:
            path_item = paths / path
            for method in HTTP_METHODS:
                if method in self.document["paths"][path]:
                    yield self._build_operation(spec, path, method, path_item)

    def _build_operation(
        self, spec: SchemaPath, path: str, method: str, path_item: SchemaPath
    ) -> Operation:
        operation = path_item / method
        raw = self.document["paths"][path][method]
        security = raw.get("security", self.document.get("security", []))
        return Operation(
            operation_id=raw["operationId"],
            method=method.upper(),
            path=path,
            tag=(raw.get("tags") or ["default"])[0],
            public=not security or security == [{}],
            parameters=tuple(_parameters(spec, path_item, operation)),
            body_required=_body_required(operation),
            body_validator=_body_validator(spec, operation),
            responses=_responses(spec, operation),
        )


def _validator(spec: SchemaPath, schema: SchemaPath) -> SchemaValidator:
    return oas31_schema_validators_factory.create(spec, schema)


def _parameters(
    spec: SchemaPath, path_item: SchemaPath, operation: SchemaPath
) -> Iterator[Parameter]:
    for owner in (path_item, operation):
        if "parameters" not in owner:
            continue
        for param in owner / "parameters":
            schema = param / "schema"
            with schema.open() as contents:
                schema_type = contents.get("type", "string")
                default = contents.get("default")
            yield Parameter(
                name=(param / "name").read_str(),
                location=(param / "in").read_str(),
                required=bool((param / "required").read_bool(False)),
                schema_type=schema_type,
                default=default,
                validator=_validator(spec, schema),
            )


def _body_required(operation: SchemaPath) -> bool:
    if "requestBody" not in operation:
        return False
    return bool((operation / "requestBody" / "required").read_bool(False))


def _body_validator(spec: SchemaPath, operation: SchemaPath) -> SchemaValidator | None:
    if "requestBody" not in operation:
        return None
    content = operation / "requestBody" / "content"
    if "application/json" not in content:
        raise ValueError("request bodies must be application/json")
    return _validator(spec, content / "application/json" / "schema")


def _responses(spec: SchemaPath, operation: SchemaPath) -> dict[int, ResponseContract]:
    contracts = {}
    for status, response in (operation / "responses").items():
        content: dict[str, SchemaValidator | None] = {}
        if "content" in response:
            for media_type, media in (response / "content").items():
                has_schema = "schema" in media
                content[media_type] = _validator(spec, media / "schema") if has_schema else None
        headers: tuple[str, ...] = ()
        if "headers" in response:
            headers = tuple(
                name.lower()
                for name, header in (response / "headers").items()
                if (header / "required").read_bool(False)
            )
        contracts[int(status)] = ResponseContract(content=content, required_headers=headers)
    return contracts


def field_errors(location: str, validator: SchemaValidator, value: Any) -> list[FieldError]:
    """Every violation of `value`, named by its path, without echoing the value."""
    return [
        _describe(location, error)
        for error in sorted(validator.validator.iter_errors(value), key=lambda e: e.path)
    ][:100]


def _describe(location: str, error: SchemaError) -> FieldError:
    # NOTE: fields are named as clients wrote them ("email", "limit"); only a problem
    # with the whole body or parameter is named by its location.
    parts = [str(part) for part in error.absolute_path]
    keyword = str(error.validator)
    if keyword == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return FieldError(_field(location, [*parts, *missing[:1]]), "required", "is required")
    if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(
        error.instance, dict
    ):
        allowed = error.schema.get("properties", {})
        named = [name for name in error.instance if name not in allowed and _NAME.match(name)]
        return FieldError(_field(location, [*parts, *named[:1]]), "unexpected", "is not allowed")
    message = _MESSAGES.get(keyword, "is invalid").format(value=error.validator_value)
    return FieldError(_field(location, parts), keyword, message)


def _field(location: str, parts: list[str]) -> str:
    return ".".join(parts) or location


_MESSAGES = {
    "type": "must be of type {value}",
    "format": "must be a valid {value}",
    "maxLength": "must be at most {value} characters",
    "minLength": "must be at least {value} characters",
    "maximum": "must be at most {value}",
    "minimum": "must be at least {value}",
    "enum": "must be one of the allowed values",
    "const": "must be {value}",
    "pattern": "does not match the required pattern",
    "maxItems": "must have at most {value} items",
    "minProperties": "must have at least {value} properties",
}


def operation_index(contract: Contract) -> dict[tuple[str, str], Operation]:
    """Operations keyed by (Falcon URI template, HTTP method), as routing reports them."""
    return {(op.path, op.method): op for op in contract.operations}
