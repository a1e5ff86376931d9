"""Request and response validation against the spec, as Falcon middleware.

We use openapi-core's schema validators, prebuilt per operation in `spec.Contract`,
instead of its Falcon integration (docs/architecture.md, "Decisions and why"): errors
stay problem+json, statuses stay right, and the client's input is never echoed back.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import falcon

from auth_service.context import AuthRequest
from auth_service.problems import PROBLEM_CONTENT_TYPE, HTTPProblem, problem_body
from auth_service.spec import (
    SAFE_FIELD_NAME,
    Contract,
    FieldError,
    Operation,
    Parameter,
    field_errors,
)
from authgate_common.problem_types import ProblemType

MAX_BODY_BYTES = 64 * 1024
_INTEGER = re.compile(r"^-?[0-9]{1,30}$")

log = logging.getLogger(__name__)


class SpecValidation:
    """Checks each request before its responder runs and each response after."""

    def __init__(
        self,
        contract: Contract,
        response_validation: str,
        on_breach: Callable[[str], None] | None = None,
    ) -> None:
        self._operations = contract.operation_index
        self._response_mode = response_validation
        self._on_breach = on_breach

    def process_resource(
        self, req: AuthRequest, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        """Validate parameters and body; hand the validated values to the responder."""
        op = self._operations.get((req.uri_template or "", req.method))
        if op is None:
            return
        req.context.operation = op
        errors: list[FieldError] = []
        req.context.query = _coerce_params(op, "query", req.params, errors)
        params.update(_coerce_params(op, "path", params, errors))
        if op.has_body:
            req.context.body = _read_body(req, op, errors)
        if errors:
            raise validation_problem(errors)
        req.context.request_valid = True

    def process_response(
        self, req: AuthRequest, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        """Check the response against the spec: a breach is a bug, logged or a 500."""
        op = req.context.operation
        if op is None or self._response_mode == "off":
            return
        # NOTE: a request we rejected never reached the responder; its error response
        # is ours and statuses like 401 are checked by the spec tests instead.
        if not req.context.request_valid:
            return
        breaches = response_breaches(op, resp)
        if not breaches:
            return
        if self._on_breach is not None:
            self._on_breach(op.operation_id)
        log.error(
            "response of %s breaks the spec: %s",
            op.operation_id,
            "; ".join(breaches),
            extra={"operation": op.operation_id, "status": resp.status_code},
        )
        if self._response_mode == "strict":
            _replace_with_server_error(req, resp)


def validation_problem(errors: list[FieldError]) -> HTTPProblem:
    """The 422 answer naming every offending field."""
    names = ", ".join(sorted({error.field for error in errors}))
    return HTTPProblem(
        ProblemType.VALIDATION_ERROR,
        detail=f"Invalid fields: {names}",
        field_errors=[error.as_dict() for error in errors],
    )


def _coerce_params(
    op: Operation, location: str, raw: Mapping[str, Any], errors: list[FieldError]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for param in op.parameters:
        if param.location != location:
            continue
        value = raw.get(param.name)
        if value is None:
            if param.required:
                errors.append(FieldError(param.name, "required", "is required"))
            elif param.default is not None:
                values[param.name] = param.default
            continue
        converted = _convert(param, value)
        if converted is _INVALID:
            message = f"must be of type {param.schema_type}"
            errors.append(FieldError(param.name, "type", message))
            continue
        found = field_errors(param.name, param.validator, converted)
        if param.schema_type == "array":
            # NOTE: an item's error names the parameter as clients wrote it (`type`, not `0`).
            found = [FieldError(param.name, error.code, error.message) for error in found]
        errors.extend(found)
        if not found:
            values[param.name] = converted
    return values


_INVALID = object()


def _convert(param: Parameter, value: Any) -> Any:
    if param.schema_type == "array":
        # NOTE: form style, exploded: `?type=a&type=b` (Falcon gives a list, or one string).
        return value if isinstance(value, list) else [value]
    if isinstance(value, list):
        return _INVALID  # NOTE: only array parameters may repeat.
    if param.schema_type == "integer":
        return int(value) if _INTEGER.match(value) else _INVALID
    if param.schema_type == "boolean":
        return {"true": True, "false": False}.get(value, _INVALID)
    return value


def _read_body(req: AuthRequest, op: Operation, errors: list[FieldError]) -> Any:
    length = req.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise HTTPProblem(ProblemType.CONTENT_TOO_LARGE)
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPProblem(ProblemType.CONTENT_TOO_LARGE)
    if not raw:
        if op.body_required:
            errors.append(FieldError("body", "required", "is required"))
        return None
    media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise HTTPProblem(
            ProblemType.UNSUPPORTED_MEDIA_TYPE,
            detail="Send the body as application/json.",
        )
    body = parse_json(raw)
    assert op.body_validator is not None
    errors.extend(field_errors("body", op.body_validator, body))
    errors.extend(unstorable_strings(body))
    return body


def unstorable_strings(value: Any, path: tuple[str, ...] = ()) -> Iterator[FieldError]:
    """Strings with an unpaired UTF-16 surrogate: valid JSON, but not I-JSON (RFC 7493).

    No driver can encode a lone surrogate, so it is a 422 naming the field rather than
    a 500. NUL, which PostgreSQL cannot store either, is the spec's own rule (`pattern`
    on every request string, enforced by tests/test_spec.py); surrogates cannot be one,
    since regex engines over Unicode scalar values (Rust's, in Schemathesis) refuse a
    surrogate in a pattern. The spec states this rule in prose (info, "Text").
    """
    if isinstance(value, str):
        if not _utf8_encodable(value):
            yield FieldError(
                ".".join(path) or "body",
                "invalid-characters",
                "must not contain unpaired surrogates",
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            # SECURITY: only names that look like field names are echoed back.
            name = key if SAFE_FIELD_NAME.match(key) else "?"
            yield from unstorable_strings(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unstorable_strings(item, (*path, str(index)))


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_json(raw: bytes) -> Any:
    """Parse a JSON body; malformed, non-standard or absurdly nested input is a 400."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # NOTE: RecursionError is what ~10 KB of "[" gives; it must not become a 500.
        raise HTTPProblem(
            ProblemType.MALFORMED_JSON, detail="The body is not valid JSON."
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def response_breaches(op: Operation, resp: falcon.Response) -> list[str]:
    """Ways the response differs from what the spec declares for its operation."""
    status = resp.status_code
    contract = op.responses.get(status)
    if contract is None:
        return [f"status {status} is not declared"]
    breaches = [
        f"header {name} is missing"
        for name in contract.required_headers
        if resp.get_header(name) is None
    ]
    body_present = resp.media is not None or bool(resp.text) or bool(resp.data)
    if not contract.content:
        if body_present:
            breaches.append("a body was sent where none is declared")
        return breaches
    # NOTE: Falcon fills in the default media type only when it renders `resp.media`.
    declared_type = resp.content_type or (falcon.MEDIA_JSON if resp.media is not None else "")
    media_type = declared_type.split(";", 1)[0].strip()
    if media_type not in contract.content:
        return [*breaches, f"content type {media_type} is not declared"]
    validator = contract.content[media_type]
    if validator is not None and resp.media is not None:
        breaches.extend(
            f"{error.field}: {error.code}" for error in field_errors("body", validator, resp.media)
        )
    return breaches


def _replace_with_server_error(req: AuthRequest, resp: falcon.Response) -> None:
    problem = HTTPProblem(ProblemType.RESPONSE_CONTRACT_VIOLATION)
    resp.status = 500
    resp.media = None
    resp.data = None
    resp.content_type = PROBLEM_CONTENT_TYPE
    resp.text = json.dumps(problem_body(req, problem))
