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
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError
from jsonschema.protocols import Validator
from openapi_core import OpenAPI
from openapi_schema_validator import OAS30ReadValidator, OAS31Validator

from auth_service.services.emails import is_email_address
from authgate_common.access import Access, operation_access

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
INTERNAL_SCHEME = "internalToken"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
SAFE_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _format_checker() -> FormatChecker:
    # NOTE: the format checker openapi-core uses for OAS 3.1 (openapi-core issue #506),
    # copied, with real email checks; the library's shared instance is left alone.
    checker = FormatChecker(formats=())
    checker.checkers = dict(OAS30ReadValidator.FORMAT_CHECKER.checkers)
    checker.checks("email")(is_email_address)
    checker.checks("idn-email")(is_email_address)
    return checker


FORMAT_CHECKER = _format_checker()


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
    validator: Validator


@dataclass(frozen=True)
class ResponseContract:
    """What one status of an operation may carry."""

    content: dict[str, Validator | None]
    required_headers: tuple[str, ...]


@dataclass(frozen=True)
class Operation:
    """One operation of the spec, with everything validation needs resolved up front."""

    operation_id: str
    method: str
    path: str
    access: Access
    parameters: tuple[Parameter, ...]
    body_required: bool
    body_validator: Validator | None
    responses: dict[int, ResponseContract] = field(repr=False)
    schemes: frozenset[str] = frozenset()

    @property
    def internal(self) -> bool:
        """Whether only the gateway may call it (the shared internal token, not a user's)."""
        return INTERNAL_SCHEME in self.schemes

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

    @cached_property
    def operation_index(self) -> dict[tuple[str, str], Operation]:
        """Operations keyed by (Falcon URI template, HTTP method), as routing reports them."""
        return {(op.path, op.method): op for op in self.operations}

    def _build_operations(self) -> Iterator[Operation]:
        for path, path_item in self.document["paths"].items():
            for method in HTTP_METHODS:
                if method in path_item:
                    yield self._build_operation(path, method, path_item)

    def _build_operation(self, path: str, method: str, path_item: dict[str, Any]) -> Operation:
        raw = path_item[method]
        security = raw.get("security", self.document.get("security", []))
        body = self._resolve(raw.get("requestBody", {}))
        return Operation(
            operation_id=raw["operationId"],
            method=method.upper(),
            path=path,
            access=operation_access(raw, security),
            schemes=frozenset(name for requirement in security for name in requirement),
            parameters=tuple(
                self._parameter(param)
                for param in [*path_item.get("parameters", []), *raw.get("parameters", [])]
            ),
            body_required=bool(body.get("required", False)),
            body_validator=self._body_validator(body),
            responses={
                int(status): self._response(response)
                for status, response in raw["responses"].items()
            },
        )

    def _parameter(self, raw: dict[str, Any]) -> Parameter:
        param = self._resolve(raw)
        # NOTE: only the top level is read here; _validator inlines the whole schema once.
        schema = self._resolve(param["schema"])
        return Parameter(
            name=param["name"],
            location=param["in"],
            required=bool(param.get("required", False)),
            schema_type=schema.get("type", "string"),
            default=schema.get("default"),
            validator=self._validator(schema),
        )

    def _body_validator(self, body: dict[str, Any]) -> Validator | None:
        if not body:
            return None
        if set(body["content"]) == {FORM_MEDIA_TYPE}:
            # NOTE: the OAuth endpoints read their form themselves and answer the
            # protocol's own errors (RFC 6749 §5.2), never a problem+json 422.
            return None
        if set(body["content"]) != {"application/json"}:
            raise ValueError("request bodies must be application/json (or a form, for OAuth)")
        return self._validator(body["content"]["application/json"]["schema"])

    def _response(self, raw: dict[str, Any]) -> ResponseContract:
        response = self._resolve(raw)
        content = {
            media_type: self._validator(media["schema"]) if "schema" in media else None
            for media_type, media in response.get("content", {}).items()
        }
        required_headers = tuple(
            name.lower()
            for name, header in response.get("headers", {}).items()
            if self._resolve(header).get("required", False)
        )
        return ResponseContract(content=content, required_headers=required_headers)

    def _validator(self, schema: dict[str, Any]) -> Validator:
        # PERF: $refs are inlined once here; resolving them per call doubled the cost.
        return OAS31Validator(self._inline(schema), format_checker=FORMAT_CHECKER)

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self._target(node["$ref"])
        return node

    def _inline(self, node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return self._inline(self._target(node["$ref"]))
            return {key: self._inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [self._inline(item) for item in node]
        return node

    def _target(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref}")
        node: Any = self.document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node


def field_errors(location: str, validator: Validator, value: Any) -> list[FieldError]:
    """Every violation of `value`, named by its path, without echoing the value."""
    return [
        _describe(location, error)
        for error in sorted(
            validator.iter_errors(value), key=lambda e: [str(part) for part in e.path]
        )
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
        named = [
            name for name in error.instance if name not in allowed and SAFE_FIELD_NAME.match(name)
        ]
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
