"""Request context (id, trace, normalised path), security headers, CORS, access log."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid

import falcon

from gateway_service.client import ClientAddress
from gateway_service.context import GatewayRequest
from gateway_service.logs import ACCESS_LOGGER
from gateway_service.metrics import Metrics
from gateway_service.settings import Settings

access_log = logging.getLogger(ACCESS_LOGGER)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
_API_CSP = "default-src 'none'; frame-ancestors 'none'"
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_METHOD_SET = frozenset(m.strip() for m in CORS_METHODS.split(","))
CORS_ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "accept",
    "x-request-id",
    "traceparent",
    "tracestate",
    "if-match",
    "if-none-match",
)
CORS_EXPOSED_HEADERS = (
    "X-Request-ID, Retry-After, WWW-Authenticate, RateLimit-Limit, "
    "RateLimit-Remaining, RateLimit-Reset, Location"
)


def normalise_path(path: str) -> str:
    """Resolve `.`/`..` (also as %2e), collapse `//`; the result is authorised and sent."""
    segments: list[str] = []
    for raw in path.split("/"):
        segment = raw.replace("%2e", ".").replace("%2E", ".")
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if segments and (path.endswith("/") or path.endswith("/.")) else ""
    return "/" + "/".join(segments) + trailing


def new_traceparent() -> str:
    """A fresh, sampled W3C `traceparent`: with tracing off the gateway starts the trace."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def valid_traceparent(value: str | None) -> bool:
    """True for a W3C trace-context `traceparent` we can forward as it is."""
    if not value:
        return False
    match = _TRACEPARENT_RE.match(value)
    if not match:
        return False
    version, trace_id, parent_id, _ = match.groups()
    return version != "ff" and trace_id != "0" * 32 and parent_id != "0" * 16


class AccessLine:
    """The access-log fields; the message renders them as JSON only if a handler asks."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, object]) -> None:
        """Keep the fields (formatters read them from the record's `access` attribute)."""
        self.fields = fields

    def __str__(self) -> str:
        """One JSON object (what caplog or a plain handler shows as the message)."""
        return json.dumps(self.fields)


class RequestContext:
    """Gives each request its id and trace context and normalises the path before routing."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        access_log_enabled: bool = True,
        addresses: ClientAddress | None = None,
        traced: bool = False,
    ) -> None:
        """Metrics and the access log are optional.

        `addresses` finds the client IP for the log when the proxy did not; `traced` means
        RequestTracing owns the trace context, so no `traceparent` is made here.
        """
        self._metrics = metrics
        self._log = access_log_enabled
        self._addresses = addresses
        self._traced = traced

    def process_request(self, req: GatewayRequest, resp: falcon.Response) -> None:
        """Set req.context.request_id / traceparent and the normalised req.path."""
        req.context.started = time.perf_counter()
        req.context.identity = None
        req.context.route = None
        request_id = req.get_header("X-Request-ID")
        if request_id is None or not _REQUEST_ID_RE.match(request_id):
            request_id = uuid.uuid4().hex
        req.context.request_id = request_id
        if self._traced:
            # The proxy injects the CLIENT span's context; nothing to make or check here.
            req.context.traceparent = None
            req.context.tracestate = None
        elif valid_traceparent(traceparent := req.get_header("traceparent")):
            req.context.traceparent = traceparent
            req.context.tracestate = req.get_header("tracestate")
        else:
            req.context.traceparent = new_traceparent()
            req.context.tracestate = None
        path = req.path
        if "//" in path or "." in path or "%" in path:
            req.path = normalise_path(path)

    def process_response(
        self, req: GatewayRequest, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        """Return the request id, count the request, write one access-log line (no bodies)."""
        request_id = req.context.request_id
        if request_id:
            resp.set_header("X-Request-ID", request_id)
        started = req.context.started
        if started is None:
            return
        seconds = time.perf_counter() - started
        route = req.context.route or req.uri_template or "unmatched"
        if self._metrics is not None:
            self._metrics.observe(route, req.method, resp.status_code, seconds)
        if self._log and access_log.isEnabledFor(logging.INFO):
            self._write_access_line(req, resp, request_id, route, seconds)

    def _write_access_line(
        self,
        req: GatewayRequest,
        resp: falcon.Response,
        request_id: str | None,
        route: str,
        seconds: float,
    ) -> None:
        context = req.context
        trace_id = context.trace_id
        span_id = context.span_id
        traceparent = context.traceparent
        if trace_id is None and traceparent:
            # Tracing off: the trace id is the one forwarded upstream, so an upstream's
            # traced logs still join this line.
            trace_id = traceparent[3:35]
        client_ip = context.client_ip
        if client_ip is None and self._addresses is not None:
            client_ip = self._addresses.client_ip(req)
        identity = context.identity
        # SECURITY: fixed fields only; never headers, query strings or bodies.
        fields: dict[str, object] = {
            "request_id": request_id,
            "trace_id": trace_id,
            "span_id": span_id,
            "method": req.method,
            "route": route,
            "status": resp.status_code,
            "duration_ms": round(seconds * 1000, 3),
            "user_id": identity.user_id if identity else None,
            "client_id": identity.client_id if identity else None,
            "client_ip": client_ip,
        }
        access_log.info("%s", AccessLine(fields), extra={"access": fields})


class SecurityHeaders:
    """helmet-like headers on every response, including errors."""

    def __init__(self, settings: Settings) -> None:
        """Precompute the header set once."""
        common = [
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("X-DNS-Prefetch-Control", "off"),
            ("X-Permitted-Cross-Domain-Policies", "none"),
            ("Origin-Agent-Cluster", "?1"),
        ]
        if settings.hsts_max_age:
            common.append(
                ("Strict-Transport-Security", f"max-age={settings.hsts_max_age}; includeSubDomains")
            )
        self._api = [*common, ("Content-Security-Policy", _API_CSP)]
        self._docs = [*common, ("Content-Security-Policy", _DOCS_CSP)]

    def process_response(
        self, req: GatewayRequest, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        """Set the headers; /docs gets a CSP that lets Swagger UI's own assets run."""
        docs = req.path == "/docs" or req.path.startswith("/docs/")
        resp.set_headers(self._docs if docs else self._api)


class Cors:
    """CORS from an allow-list; answers preflights at the gateway."""

    def __init__(self, settings: Settings, max_age: int = 600) -> None:
        """Keep the allowed origins (`*` allows any)."""
        self._any = "*" in settings.cors_origins
        self._origins = frozenset(o.rstrip("/") for o in settings.cors_origins if o != "*")
        self._max_age = str(max_age)

    def _allowed(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin in self._origins)

    def process_request(self, req: GatewayRequest, resp: falcon.Response) -> None:
        """Answer a preflight (OPTIONS + Origin + Access-Control-Request-Method) with 204."""
        if req.method != "OPTIONS":
            return
        origin = req.get_header("Origin")
        wanted_method = req.get_header("Access-Control-Request-Method")
        if origin is None or wanted_method is None:
            return
        resp.status = falcon.HTTP_204
        resp.complete = True
        req.context.route = "cors-preflight"
        resp.set_header("Vary", "Origin")
        if not self._allowed(origin) or wanted_method.upper() not in _CORS_METHOD_SET:
            return
        wanted_headers = req.get_header("Access-Control-Request-Headers") or ""
        headers = [h.strip().lower() for h in wanted_headers.split(",") if h.strip()]
        if any(h not in CORS_ALLOWED_HEADERS for h in headers):
            return
        resp.set_header("Access-Control-Allow-Origin", origin)
        resp.set_header("Access-Control-Allow-Methods", CORS_METHODS)
        resp.set_header("Access-Control-Allow-Headers", ", ".join(CORS_ALLOWED_HEADERS))
        resp.set_header("Access-Control-Max-Age", self._max_age)

    def process_response(
        self, req: GatewayRequest, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        """Allow the origin on actual requests; never on a disallowed one."""
        if req.context.route == "cors-preflight":
            return
        origin = req.get_header("Origin")
        if origin is None:
            return
        resp.append_header("Vary", "Origin")
        if self._allowed(origin):
            resp.set_header("Access-Control-Allow-Origin", origin)
            resp.set_header("Access-Control-Expose-Headers", CORS_EXPOSED_HEADERS)
