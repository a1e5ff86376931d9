"""One writer for every error: application/problem+json (RFC 9457) with the request id."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from authgate_common.problem_types import ProblemType, problem_document

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


def write_problem(
    req: falcon.Request,
    resp: falcon.Response,
    problem: ProblemType,
    *,
    detail: str | None = None,
    status: int | None = None,
) -> None:
    """Make `resp` a problem response (used outside of HTTPError, e.g. upstream failures).

    `status` only for a type that takes the upstream's (ProblemType.UPSTREAM_ERROR).
    """
    body = problem_document(
        problem, status=status, detail=detail, request_id=req.context.request_id
    )
    resp.status = body["status"]
    resp.content_type = PROBLEM_CONTENT_TYPE
    resp.data = json.dumps(body, separators=(",", ":")).encode()


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Falcon error serializer: every HTTPError becomes problem+json, whatever Accept says.

    NOTE: the gateway names a problem in Falcon's `code` (ProblemType.X); an error without
    one, such as Falcon's own 404 or 405, gets its status's generic type.
    """
    status = error.status_code
    named = error.code if isinstance(error.code, ProblemType) else None
    problem = named or ProblemType.for_status(status)
    if problem.status == status:
        write_problem(req, resp, problem, detail=error.description)
    else:
        write_problem(req, resp, ProblemType.INTERNAL_ERROR)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    """Log a bug with its traceback; the client gets a bare 500 problem."""
    if isinstance(ex, falcon.HTTPError | falcon.HTTPStatus):
        raise ex
    log.error("unhandled error on %s %s", req.method, req.path, exc_info=ex)
    raise falcon.HTTPInternalServerError(description="An unexpected error occurred.")
