"""One writer for every error: application/problem+json (RFC 9457) with the request id."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import falcon

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://authgate.dev/problems/"


def problem_body(
    status: int, title: str | None, detail: str | None, code: str | None, request_id: str | None
) -> bytes:
    """Render a problem document; `type` is about:blank unless a stable code is given."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code if code else "about:blank",
        "title": title or _phrase(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body, separators=(",", ":")).encode()


def write_problem(
    req: falcon.Request,
    resp: falcon.Response,
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    code: str | None = None,
) -> None:
    """Make `resp` a problem response (used outside of HTTPError, e.g. upstream failures)."""
    resp.status = status
    resp.content_type = PROBLEM_CONTENT_TYPE
    resp.data = problem_body(status, title, detail, code, req.context.request_id)


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Falcon error serializer: every HTTPError becomes problem+json, whatever Accept says."""
    status = error.status_code
    title = error.title
    if not title or title.startswith(str(status)):
        title = _phrase(status)
    code = error.code if isinstance(error.code, str) else None
    resp.content_type = PROBLEM_CONTENT_TYPE
    resp.data = problem_body(status, title, error.description, code, req.context.request_id)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    """Log a bug with its traceback; the client gets a bare 500 problem."""
    if isinstance(ex, falcon.HTTPError | falcon.HTTPStatus):
        raise ex
    log.error("unhandled error on %s %s", req.method, req.path, exc_info=ex)
    raise falcon.HTTPInternalServerError(description="An unexpected error occurred.")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
