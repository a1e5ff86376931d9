"""Per-request context: the request id, and one access-log line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import falcon

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

access_log = logging.getLogger("authgate.access")


class RequestContext:
    """Keeps or makes X-Request-ID, returns it, and logs the request when it ends."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Start the clock and settle the request id."""
        req.context.started = time.perf_counter()
        incoming = req.get_header("X-Request-ID")
        req.context.request_id = (
            incoming if incoming and _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        )

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Echo the request id and write the access-log line (no bodies, no tokens)."""
        resp.set_header("X-Request-ID", req.context.request_id)
        principal = getattr(req.context, "principal", None)
        access_log.info(
            "request",
            extra={
                "request_id": req.context.request_id,
                "method": req.method,
                "route": req.uri_template or "(unmatched)",
                "status": resp.status_code,
                "duration_ms": round((time.perf_counter() - req.context.started) * 1000, 2),
                "user_id": str(principal.id) if principal is not None else None,
                "client_ip": req.remote_addr,
            },
        )
