"""The gateway's typed request context (what middleware hands to the proxy)."""

from __future__ import annotations

import falcon

from authgate_common.context import RequestContextBase
from gateway_service.tokens import Identity


class GatewayContext(RequestContextBase):
    """Set by RequestContext and the proxy; read by the access log and error pages."""

    # The verified caller, when the route took a token.
    identity: Identity | None = None
    # The W3C trace headers sent upstream (tracing on or off).
    traceparent: str | None = None
    tracestate: str | None = None


class GatewayRequest(falcon.Request):
    """A Falcon request whose `context` is a GatewayContext."""

    context_type = GatewayContext
    context: GatewayContext
