"""One way to write errors: RFC 9457 problem+json, for our errors and Falcon's own."""

from __future__ import annotations

import http
import json
import logging
from typing import Any

import falcon

from auth_service import errors

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://authgate.dev/problems/"

log = logging.getLogger(__name__)


class HTTPProblem(falcon.HTTPError):
    """An HTTP error with a stable machine-readable code and optional field errors."""

    def __init__(
        self,
        status: int,
        *,
        code: str,
        title: str,
        detail: str | None = None,
        field_errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        members: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, title=title, description=detail, headers=headers)
        # NOTE: Falcon's own `code` is an int; ours is the stable problem type's slug.
        self.problem_code = code
        self.field_errors = field_errors
        self.members = members or {}


def unauthorized(code: str, detail: str, *, invalid_token: bool) -> HTTPProblem:
    """Build a 401 with the RFC 6750 challenge (error="invalid_token" when one was sent)."""
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return HTTPProblem(
        401,
        code=code,
        title="Unauthorized",
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )


def problem_body(req: falcon.Request, error: falcon.HTTPError) -> dict[str, Any]:
    """The RFC 9457 document for an error; never includes the client's input."""
    status = error.status_code
    code: str | None = getattr(error, "problem_code", None)
    title = error.title or ""
    if not title or title[:3].isdigit():
        # NOTE: Falcon's own errors use the status line ("404 Not Found") as title.
        title = http.HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code if code else "about:blank",
        "title": title,
        "status": status,
    }
    if error.description:
        body["detail"] = error.description
    request_id = req.context.request_id
    if request_id:
        body["request_id"] = request_id
    field_errors = getattr(error, "field_errors", None)
    if field_errors:
        body["errors"] = field_errors
    body.update(getattr(error, "members", {}))
    return body


def serialize_problem(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Falcon error serializer: every HTTPError leaves as problem+json."""
    resp.content_type = PROBLEM_CONTENT_TYPE
    resp.text = json.dumps(problem_body(req, error))
    resp.append_header("Vary", "Accept")


def handle_domain_error(
    req: falcon.Request, resp: falcon.Response, ex: errors.DomainError, params: dict[str, Any]
) -> None:
    """Turn a service's domain error into its problem response."""
    headers = {}
    if ex.status == 401:
        # NOTE: RFC 9110 §15.5.2: every 401 carries a challenge, login failures included.
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(ex, errors.LoginThrottled):
        headers["Retry-After"] = str(ex.retry_after)
    if ex.members:
        # SECURITY: an extension member may be a credential (mfa_token): never cached.
        headers["Cache-Control"] = "no-store"
    field_errors = None
    if ex.field:
        field_errors = [{"field": ex.field, "code": ex.code, "message": ex.detail or ex.title}]
    raise HTTPProblem(
        ex.status,
        code=ex.code,
        title=ex.title,
        detail=ex.detail,
        field_errors=field_errors,
        headers=headers or None,
        members=ex.members,
    )


def handle_unexpected_error(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    """Log a bug with its traceback; the client sees a bare 500 problem."""
    log.error(
        "unhandled error",
        exc_info=ex,
        extra={"request_id": req.context.request_id},
    )
    raise HTTPProblem(500, code="internal-error", title="Internal Server Error")


def install(app: falcon.App[Any, falcon.Response]) -> None:
    """Route every error through the problem+json writer."""
    app.set_error_serializer(serialize_problem)
    app.add_error_handler(Exception, handle_unexpected_error)
    app.add_error_handler(errors.DomainError, handle_domain_error)
