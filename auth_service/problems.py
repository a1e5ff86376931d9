"""One way to write errors: RFC 9457 problem+json, for our errors and Falcon's own."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from auth_service import errors
from authgate_common.problem_types import ProblemType, problem_document

PROBLEM_CONTENT_TYPE = "application/problem+json"

log = logging.getLogger(__name__)


class HTTPProblem(falcon.HTTPError):
    """An HTTP error of a registered problem type, with optional field errors."""

    def __init__(
        self,
        problem: ProblemType,
        *,
        detail: str | None = None,
        field_errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        members: dict[str, str] | None = None,
    ) -> None:
        if problem.status is None:
            raise ValueError(f"{problem.slug}: only the gateway relays an upstream's status")
        super().__init__(
            problem.status, title=problem.problem_title, description=detail, headers=headers
        )
        self.problem = problem
        self.field_errors = field_errors
        self.members = members or {}


def unauthorized(problem: ProblemType, detail: str, *, invalid_token: bool) -> HTTPProblem:
    """Build a 401 with the RFC 6750 challenge (error="invalid_token" when one was sent)."""
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return HTTPProblem(problem, detail=detail, headers={"WWW-Authenticate": challenge})


def problem_body(req: falcon.Request, error: falcon.HTTPError) -> dict[str, Any]:
    """The RFC 9457 document for an error; never includes the client's input."""
    if isinstance(error, HTTPProblem):
        problem = error.problem
    else:
        problem = ProblemType.for_status(error.status_code)
    body = problem_document(
        problem,
        detail=error.description if problem.status == error.status_code else None,
        request_id=req.context.request_id,
    )
    field_errors = getattr(error, "field_errors", None)
    if field_errors:
        body["errors"] = field_errors
    body.update(getattr(error, "members", {}))
    return body


def serialize_problem(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Falcon error serializer: every HTTPError leaves as problem+json of a registered type."""
    body = problem_body(req, error)
    resp.status = body["status"]
    resp.content_type = PROBLEM_CONTENT_TYPE
    resp.text = json.dumps(body)
    resp.append_header("Vary", "Accept")


def handle_domain_error(
    req: falcon.Request, resp: falcon.Response, ex: errors.DomainError, params: dict[str, Any]
) -> None:
    """Turn a service's domain error into its problem response."""
    headers = {}
    if ex.problem.status == 401:
        # NOTE: RFC 9110 §15.5.2: every 401 carries a challenge, login failures included.
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(ex, errors.LoginThrottled):
        headers["Retry-After"] = str(ex.retry_after)
    if ex.members:
        # SECURITY: an extension member may be a credential (mfa_token): never cached.
        headers["Cache-Control"] = "no-store"
    raise HTTPProblem(
        ex.problem,
        detail=ex.detail,
        field_errors=ex.field_errors(),
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
    raise HTTPProblem(ProblemType.INTERNAL_ERROR)


def install(app: falcon.App[Any, falcon.Response]) -> None:
    """Route every error through the problem+json writer."""
    app.set_error_serializer(serialize_problem)
    app.add_error_handler(Exception, handle_unexpected_error)
    app.add_error_handler(errors.DomainError, handle_domain_error)
