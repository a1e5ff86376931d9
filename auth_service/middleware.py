"""Per-request context: the request id, and one access-log line and metric per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import falcon

from auth_service.client import client_ip
from auth_service.context import AuthRequest
from auth_service.logs import ACCESS_LOGGER
from auth_service.metrics import UNMATCHED_ROUTE, Metrics
from authgate_common.env import Network

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

access_log = logging.getLogger(ACCESS_LOGGER)


class RequestContext:
    """Keeps or makes X-Request-ID, returns it, logs and counts the request when it ends."""

    def __init__(self, metrics: Metrics, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self._metrics = metrics
        self._trusted_proxies = trusted_proxies

    def process_request(self, req: AuthRequest, resp: falcon.Response) -> None:
        """Start the clock and settle the request id and the client's address."""
        req.context.started = time.perf_counter()
        incoming = req.get_header("X-Request-ID")
        req.context.request_id = (
            incoming if incoming and _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        )
        # NOTE: worked out once here for the access log and the session records alike.
        req.context.client_ip = client_ip(req, self._trusted_proxies)

    def process_response(
        self, req: AuthRequest, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Echo the request id, count the request, write the access-log line (no bodies)."""
        started, request_id = req.context.started, req.context.request_id
        if started is None or request_id is None:
            return  # NOTE: process_request never ran (an earlier middleware raised).
        seconds = time.perf_counter() - started
        resp.set_header("X-Request-ID", request_id)
        # NOTE: the route template, never the raw path: one series per route, not per id.
        route = req.uri_template or UNMATCHED_ROUTE
        status = resp.status_code
        self._metrics.observe_request(route, req.method, status, seconds)
        principal = req.context.principal
        access_log.info(
            "request",
            extra={
                "request_id": req.context.request_id,
                # Set by RequestTracing when tracing is on; null otherwise.
                "trace_id": req.context.trace_id,
                "span_id": req.context.span_id,
                "method": req.method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "user_id": str(principal.id) if principal is not None else None,
                "client_ip": req.context.client_ip,
            },
        )
