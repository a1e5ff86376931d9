"""What middleware hands to the rest of a request, typed (Falcon's `Request.context_type`).

Each service's context subclasses `RequestContextBase`; every attribute has a class-level
default, so code reads `req.context.x` directly instead of `getattr(req.context, "x", None)`
for a request that ended before the middleware setting `x` ran.
"""

from __future__ import annotations

import falcon
from opentelemetry import trace


class RequestContextBase(falcon.Context):
    """What both services' request middleware and tracing keep on a request."""

    request_id: str | None = None
    # time.perf_counter() when the request-context middleware saw the request.
    started: float | None = None
    # The route label for logs, metrics and spans, when it is not Falcon's uri_template
    # (the gateway names its proxied routes by prefix).
    route: str | None = None
    client_ip: str | None = None
    # Set by authgate_common.tracing.RequestTracing when tracing is on.
    span: trace.Span | None = None
    trace_id: str | None = None
    span_id: str | None = None
    trace_context_token: object | None = None
