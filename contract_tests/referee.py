"""openapi-core as the referee of every request Schemathesis sends and every answer.

The services validate with per-operation validators built at start-up from
openapi-core's schema validators (auth_service/spec.py), not with openapi-core's own
request/response validation. This check holds the two to one verdict: openapi-core's
`OpenAPI.validate_request` / `validate_response`, built once per session, judge each
exchange, and the check fails when the service calls a request invalid (400/422) that
openapi-core calls valid, answers 2xx to one openapi-core calls invalid, or sends a
response openapi-core calls invalid.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from contract_support import SPEC_PATH
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.media_types.util import json_loads
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.paths.exceptions import PathError
from schemathesis_hooks import named_fields, over_bcrypt_limit
from werkzeug.datastructures import Headers, ImmutableMultiDict

from auth_service.services.emails import is_email_address
from authgate_common.problem_types import ProblemType

PROBLEM_TYPE_PREFIX = "https://authgate.dev/problems/"
# 400s that answer a schema-valid request about *state*, not validity (schemathesis.toml
# says why they stay 400): openapi-core cannot know the token or the password.
STATE_REFUSALS = frozenset({"invalid-reset-token", "wrong-password", "wrong-mfa-code"})


@cache
def openapi() -> OpenAPI:
    """openapi-core's view of the spec, built once per session."""
    # NOTE: openapi-core parses only the media types it lists (application/json,
    # application/vnd.api+json, ...), not every +json type (python-openapi/openapi-core
    # #224); unlisted ones stay bytes, so every problem document would fail "type:
    # object". Its documented extension point registers RFC 9457's type as JSON.
    # NOTE: JSON Schema leaves asserting `format` to each implementation, and
    # openapi-core's `idn-email` (jsonschema's) asks only for an "@", so `a@b*` would be
    # valid to it and a 422 from the service. The contract means an address (Schemathesis
    # asserts it too): the referee reads `idn-email` as the service does, through
    # openapi-core's documented extension point.
    config = Config(
        extra_media_type_deserializers={"application/problem+json": json_loads},
        extra_format_validators={"email": is_email_address, "idn-email": is_email_address},
    )
    return OpenAPI.from_path(SPEC_PATH, config=config)


class SentRequest(RequestsOpenAPIRequest):
    """The request as sent, for openapi-core, with empty query values kept.

    NOTE: openapi-core's requests adapter parses the query with parse_qs's default,
    which drops `offset=` as if the parameter were absent, while openapi-core itself
    refuses an empty value (python-openapi/openapi-core #1210; #1020 fixed the same
    parse for form bodies only). The service refuses it too: without this, openapi-core
    would call `?offset=` valid only because it never saw it.
    """

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        query = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query),
            header=self.parameters.header,
            cookie=self.parameters.cookie,
        )


class OpenAPIResponse:
    """A Schemathesis response as openapi-core's Response protocol."""

    def __init__(self, response: Any) -> None:
        self.data: bytes = response.content
        self.status_code: int = response.status_code
        # Schemathesis keeps header names lower-cased, values as lists; openapi-core
        # looks headers up by the spec's spelling, so they go in a case-blind mapping.
        self.headers = Headers(
            [(name, value) for name, values in response.headers.items() for value in values]
        )
        self.content_type: str = self.headers.get("content-type", "")


def problem_code(response: Any) -> str:
    """The last segment of a problem+json `type`."""
    try:
        kind = str(response.json().get("type", ""))
    except (ValueError, AttributeError):
        return ""
    return kind.removeprefix(PROBLEM_TYPE_PREFIX)


def refused_as_invalid(response: Any, body: Any) -> bool:
    """Whether the service's answer says "this request breaks the contract"."""
    status = response.status_code
    if status not in (400, 422):
        return False
    if is_oauth_protocol_refusal(response):
        return False
    code = problem_code(response)
    if code in STATE_REFUSALS:
        return False
    # gunicorn's own refusals (deploy/gunicorn_worker.py: the generic bad-request) judge
    # HTTP framing (a header value HTTP cannot carry), which openapi-core never sees.
    if code == ProblemType.BAD_REQUEST.slug:
        return False
    fields = named_fields(response)
    # The rules the spec states in prose only (info.description, "Text"; NewPassword): a
    # password over 72 bytes of UTF-8 and an unpaired surrogate escape are 422s that
    # JSON Schema, and so openapi-core, cannot see.
    if status == 422 and over_bcrypt_limit(body) & fields:
        return False
    codes = _error_codes(response)
    return not (status == 422 and codes == {"invalid-characters"})


def is_oauth_protocol_refusal(response: Any) -> bool:
    """An OAuth endpoint's own refusal: RFC 6749 §5.2 JSON or the authorize error page.

    The protocol answers 400 to an unknown client, code or token as to a missing
    parameter, and which parameters a grant needs is beyond JSON Schema; those verdicts
    are tested in tests/oauth/, the schema's (NUL, lengths) still here as 422s.
    """
    content_type = response.headers.get("content-type", [""])
    media_type = (content_type[0] if isinstance(content_type, list) else content_type).split(";")[0]
    if media_type == "text/html":
        return True
    if media_type != "application/json":
        return False
    try:
        return "error" in response.json()
    except (ValueError, AttributeError):
        return False


def _error_codes(response: Any) -> set[str]:
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError):
        return set()
    return {error.get("code") for error in errors if isinstance(error, dict)}


def request_verdict(request: SentRequest) -> OpenAPIError | None:
    """openapi-core's objection to the request, or None when it calls it valid."""
    try:
        openapi().validate_request(request)
    except OpenAPIError as error:
        return error
    return None


def openapi_core_agrees(ctx: Any, response: Any, case: Any) -> bool | None:
    """Fail when openapi-core and the service reach different verdicts (a Schemathesis check)."""
    request = SentRequest(response.request)
    objection = request_verdict(request)
    if isinstance(objection, PathError):
        # An undeclared path or method (TRACE, ...): openapi-core has no operation to
        # judge by; the unsupported_method check holds the service to 405.
        return None
    status = response.status_code
    if objection is None and refused_as_invalid(response, case.body):
        raise AssertionError(
            f"openapi-core calls the request valid; the service refused it with {status} "
            f"({problem_code(response)}, fields {sorted(named_fields(response))})"
        )
    if objection is not None and 200 <= status < 300:
        raise AssertionError(
            f"openapi-core calls the request invalid ({_describe(objection)}); "
            f"the service accepted it with {status}"
        )
    try:
        openapi().validate_response(request, OpenAPIResponse(response))
    except OpenAPIError as error:
        raise AssertionError(
            f"openapi-core rejects the {status} response: {_describe(error)}"
        ) from None
    return None


def _describe(error: BaseException) -> str:
    causes = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__
    while cause is not None and len(causes) < 4:
        causes.append(f"{type(cause).__name__}: {str(cause)[:300]}")
        cause = cause.__cause__
    return " <- ".join(causes)
