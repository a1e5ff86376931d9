"""The proxy sink: authorise, rate limit, forward faithfully, map upstream failures."""

from __future__ import annotations

import functools
import itertools
import logging
import math
import ssl
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import falcon

from authgate_common.bearer import bearer_token
from gateway_service.breaker import CLOSED, CircuitBreaker
from gateway_service.client import ClientAddress
from gateway_service.discovery import address_book_for, url_with_address
from gateway_service.metrics import Metrics
from gateway_service.middleware import new_traceparent
from gateway_service.problems import write_problem
from gateway_service.ratelimit import Outcome, Store, StoreUnavailable
from gateway_service.routes import Decision, RouteTable
from gateway_service.settings import Settings
from gateway_service.tokens import (
    REVOKED_SID_PREFIX,
    Identity,
    KeysUnavailable,
    TokenError,
    TokenVerifier,
)
from gateway_service.tracing import UpstreamTracing
from gateway_service.upstream_http import (
    BadResponse,
    ConnectTimeout,
    Dropped,
    InvalidRequest,
    Unreachable,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
    default_tls_context,
)

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
IDENTITY_HEADERS = frozenset({"x-user-id", "x-user-roles", "x-session-id"})
# Headers the gateway sets itself (or its upstream client frames) rather than copying.
_REQUEST_OWN = (
    HOP_BY_HOP
    | IDENTITY_HEADERS
    | {
        "host",
        "content-length",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        # SECURITY: an upstream trusting X-Real-IP would believe whatever the client says.
        "x-real-ip",
        "x-request-id",
        "traceparent",
        "tracestate",
    }
)
_RESPONSE_DROP = HOP_BY_HOP | {"server", "x-powered-by", "content-length", "date", "x-request-id"}
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_PATH_SAFE = "/!$&'()*+,;=:@~-._"
_BUFFER_LIMIT = 1024 * 1024
_CHUNK = 64 * 1024


class Upstream:
    """One upstream base URL: its connection pool and circuit breaker."""

    def __init__(
        self,
        base_url: str,
        settings: Settings,
        name: str,
        metrics: Metrics | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        """Build the pool once per process.

        `name` labels its metrics: the first route prefix it serves, never its host.
        """
        self.base_url = base_url
        self.name = name
        self.prefix = urlsplit(base_url).path.rstrip("/")
        on_change = None
        if metrics is not None:
            metrics.breaker_changed(self.name, CLOSED)
            on_change = functools.partial(metrics.breaker_changed, self.name)
        self.breaker = CircuitBreaker(
            settings.breaker_failure_threshold, settings.breaker_reset_seconds, on_change=on_change
        )
        self._settings = settings
        self._tls = tls
        # Service discovery (discovery.py): a DNS name's addresses in turn, one pool each.
        self.addresses = address_book_for(
            base_url, settings.dns_refresh_seconds, settings.breaker_reset_seconds
        )
        self._pools: dict[str, UpstreamPool] = {}
        # PERF: our own keep-alive client, not requests.Session: see upstream_http.
        self.pool = self._new_pool(base_url)

    def pick(self) -> tuple[str | None, UpstreamPool]:
        """The address to use next (None without discovery) and its pool."""
        if self.addresses is None:
            return None, self.pool
        address = self.addresses.next_address()
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools.setdefault(
                address, self._new_pool(url_with_address(self.base_url, address))
            )
        return address, pool

    def _new_pool(self, url: str) -> UpstreamPool:
        return UpstreamPool(
            url,
            self._settings.connect_timeout,
            self._settings.read_timeout,
            self._settings.pool_size,
            ssl_context=self._tls,
        )


def upstream_tls(settings: Settings, base_urls: list[str]) -> ssl.SSLContext | None:
    """One TLS context for every https upstream: the operator's CAs, else the public bundle."""
    if not any(urlsplit(url).scheme == "https" for url in base_urls):
        return None
    ca_file = settings.upstream_ca_file
    if ca_file is None:
        return default_tls_context()
    return ssl.create_default_context(cafile=str(ca_file))


class ProxySink:
    """Falcon sink for every path that is not one of the gateway's own endpoints."""

    def __init__(
        self,
        settings: Settings,
        table: RouteTable,
        upstreams: dict[str, Upstream],
        verifier: TokenVerifier,
        store: Store,
        metrics: Metrics | None = None,
        tracing: UpstreamTracing | None = None,
    ) -> None:
        """Wire the collaborators built by create_app; `tracing` is None when it is off."""
        self._metrics = metrics
        self._tracing = tracing
        self._table = table
        self._upstreams = upstreams
        self._verifier = verifier
        self._store = store
        self._addresses = ClientAddress(settings)
        self._max_body = settings.max_body_bytes
        self._retries = settings.upstream_retries
        self._key_prefix = settings.rate_limit_key_prefix
        self._revocation_fail_open = settings.revocation_fail_open

    def __call__(self, req: falcon.Request, resp: falcon.Response, **kwargs: Any) -> None:
        """Handle one proxied request end to end."""
        decision = self._table.resolve(req.method, req.path)
        if decision is None:
            raise falcon.HTTPNotFound(description="No route matches this path.")
        req.context.route = decision.prefix
        length = req.content_length
        if length is not None and length > self._max_body:
            raise _too_large(self._max_body)
        identity = self._authenticate(req, decision)
        req.context.identity = identity
        client_ip, forwarded = self._addresses.forwarded(req)
        req.context.client_ip = client_ip
        self._guard(req, resp, decision, client_ip, identity)
        body = self._read_body(req, length)
        headers = self._request_headers(req, forwarded, identity)
        self._forward(req, resp, decision, headers, body)

    def _authenticate(self, req: falcon.Request, decision: Decision) -> Identity | None:
        if decision.access == "none":
            return None
        token = bearer_token(req.get_header("Authorization"))
        if token is None:
            if decision.access == "optional":
                return None
            raise falcon.HTTPUnauthorized(
                title="Unauthorized",
                description="An access token is required.",
                challenges=["Bearer"],
                code="missing_token",
            )
        try:
            return self._verifier.verify(token)
        except TokenError as ex:
            raise _invalid_token(ex.description) from None
        except KeysUnavailable:
            raise falcon.HTTPServiceUnavailable(
                description="Token keys are not available yet; try again shortly.",
                headers={"Retry-After": "5"},
                code="keys_unavailable",
            ) from None

    def _guard(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        decision: Decision,
        client_ip: str,
        identity: Identity | None,
    ) -> None:
        buckets = []
        if decision.rate is not None:
            buckets.append(f"{self._key_prefix}{decision.policy}:ip:{client_ip}")
            if identity is not None:
                buckets.append(f"{self._key_prefix}{decision.policy}:user:{identity.user_id}")
        revoked_key = None
        if identity is not None and self._store.shared:
            revoked_key = REVOKED_SID_PREFIX + identity.session_id
        if not buckets and revoked_key is None:
            return
        try:
            outcome = self._store.check(buckets, decision.rate, revoked_key)
        except StoreUnavailable:
            self._store_unavailable(decision, identity)
            return
        self._apply(resp, decision, outcome)

    def _store_unavailable(self, decision: Decision, identity: Identity | None) -> None:
        limits_closed = decision.rate is not None and not decision.fail_open
        sessions_closed = identity is not None and not self._revocation_fail_open
        if self._metrics is not None:
            outcome = "closed" if limits_closed or sessions_closed else "open"
            self._metrics.store_failures.labels(outcome).inc()
        if limits_closed:
            raise falcon.HTTPServiceUnavailable(
                description="Rate limiting is unavailable; try again shortly.",
                headers={"Retry-After": "1"},
                code="rate_limit_unavailable",
            )
        if sessions_closed:
            raise falcon.HTTPServiceUnavailable(
                description="Session checks are unavailable; try again shortly.",
                headers={"Retry-After": "1"},
                code="session_check_unavailable",
            )
        # NOTE: failing open here; RedisStore already logged the failure (once per second).

    def _apply(self, resp: falcon.Response, decision: Decision, outcome: Outcome) -> None:
        if outcome.revoked:
            raise _invalid_token("The session has been revoked")
        usage = outcome.usage
        if usage is None:
            return
        headers = {
            "RateLimit-Limit": str(usage.limit),
            "RateLimit-Remaining": str(usage.remaining),
            "RateLimit-Reset": str(usage.reset),
        }
        if not usage.allowed:
            if self._metrics is not None:
                self._metrics.ratelimit_rejections.labels(decision.prefix, decision.policy).inc()
            headers["Retry-After"] = str(usage.reset)
            raise falcon.HTTPTooManyRequests(
                description="Rate limit exceeded; retry later.",
                headers=headers,
                code="rate_limited",
            )
        resp.set_headers(headers)

    def _read_body(self, req: falcon.Request, length: int | None) -> bytes | None:
        stream = req.stream
        if length is not None:
            if length == 0:
                return b"" if req.method not in ("GET", "HEAD") else None
            body = stream.read(length)
            if len(body) != length:
                raise falcon.HTTPBadRequest(description="The request body is incomplete.")
            return body
        if "chunked" in req.env.get("HTTP_TRANSFER_ENCODING", "").lower():
            # SECURITY: bound the read; a chunked body has no length to check up front.
            body = stream.read(self._max_body + 1)
            if len(body) > self._max_body:
                raise _too_large(self._max_body)
            return body
        return None

    @staticmethod
    def _request_headers(
        req: falcon.Request, forwarded: dict[str, str], identity: Identity | None
    ) -> dict[str, str]:
        env = req.env
        connection = env.get("HTTP_CONNECTION")
        named = {t.strip().lower() for t in connection.split(",")} if connection else set()
        headers: dict[str, str] = {}
        for key, value in env.items():
            if not key.startswith("HTTP_"):
                continue
            name = key[5:].replace("_", "-").lower()
            if name in _REQUEST_OWN or name in named:
                continue
            if not value.isascii():
                try:
                    value.encode("latin-1")
                except UnicodeEncodeError:
                    # NOTE: a WSGI server never gives us this; drop rather than crash.
                    continue
            headers[name.title()] = value
        content_type = env.get("CONTENT_TYPE")
        if content_type:
            headers["Content-Type"] = content_type
        headers.update(forwarded)
        headers["X-Request-ID"] = req.context.request_id
        # NOTE: None when tracing is on: the CLIENT span's context is injected instead.
        if req.context.traceparent is not None:
            headers["traceparent"] = req.context.traceparent
            if req.context.tracestate:
                headers["tracestate"] = req.context.tracestate
        if identity is not None:
            headers["X-User-Id"] = identity.user_id
            headers["X-User-Roles"] = identity.role
            headers["X-Session-Id"] = identity.session_id
        return headers

    def _forward(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        decision: Decision,
        headers: dict[str, str],
        body: bytes | None,
    ) -> None:
        upstream = self._upstreams[decision.upstream]
        wait = upstream.breaker.before_call()
        if wait is not None:
            raise falcon.HTTPServiceUnavailable(
                description="The upstream service is unavailable; try again later.",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
                code="upstream_unavailable",
            )
        # SECURITY: the path sent is the normalised one we authorised, re-encoded once.
        target = upstream.prefix + quote(req.path, safe=_PATH_SAFE)
        query = req.env.get("QUERY_STRING")
        if query:
            target += "?" + query
        if body is not None:
            headers["Content-Length"] = str(len(body))
        started = time.perf_counter()
        try:
            if self._tracing is None:
                self._exchange(req, resp, upstream, target, headers, body)
            else:
                with self._tracing.call(
                    req.method, upstream.base_url, target, decision.prefix, headers
                ) as span:
                    if "traceparent" not in headers:
                        # NOTE: a no-op provider (OTEL_SDK_DISABLED) injects nothing for a
                        # request that came without a trace; upstreams still get one.
                        headers["traceparent"] = new_traceparent()
                    self._exchange(req, resp, upstream, target, headers, body)
                    self._tracing.record_status(span, resp.status_code)
        finally:
            if self._metrics is not None:
                self._metrics.observe_upstream(upstream.name, time.perf_counter() - started)

    def _exchange(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        upstream: Upstream,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> None:
        upstream_resp = self._send(upstream, req.method, target, headers, body)
        try:
            self._relay(req, resp, upstream_resp)
        except UpstreamError as ex:
            upstream_resp.close()
            upstream.breaker.record_failure()
            if isinstance(ex, UpstreamTimeout):
                raise _timed_out() from None
            raise falcon.HTTPBadGateway(
                description="The upstream service failed.", code="upstream_failed"
            ) from None

    def _send(
        self,
        upstream: Upstream,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> UpstreamResponse:
        # NOTE: never /auth/refresh (DESIGN §10): it is a POST, so this rule covers it.
        retryable = method in _IDEMPOTENT
        attempts = 1 + (self._retries if retryable else 0)
        for attempt in range(attempts):
            address, pool = upstream.pick()
            try:
                result = pool.request(method, target, headers, body)
            except (Unreachable, Dropped) as ex:
                if isinstance(ex, Unreachable) and upstream.addresses and address:
                    # Refused: skip this address; a retry takes the next one.
                    upstream.addresses.mark_failed(address)
                # Nothing (or nothing usable) came back: safe to repeat only if idempotent.
                if attempt + 1 < attempts:
                    continue
                upstream.breaker.record_failure()
                raise falcon.HTTPBadGateway(
                    description="The upstream service could not be reached.",
                    code="upstream_unreachable",
                ) from None
            except UpstreamTimeout as ex:
                # A discovered address that vanished (a stopped replica) times out on
                # connect until DNS drops it: skip it and, if idempotent, try the next.
                if isinstance(ex, ConnectTimeout) and upstream.addresses and address:
                    upstream.addresses.mark_failed(address)
                    if attempt + 1 < attempts:
                        continue
                upstream.breaker.record_failure()
                raise _timed_out() from None
            except BadResponse:
                upstream.breaker.record_failure()
                raise falcon.HTTPBadGateway(
                    description="The upstream service failed.", code="upstream_failed"
                ) from None
            except InvalidRequest:
                upstream.breaker.record_success()
                raise falcon.HTTPBadRequest(description="A request header is invalid.") from None
            if result.status in (502, 503, 504):
                upstream.breaker.record_failure()
            else:
                upstream.breaker.record_success()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _relay(
        self, req: falcon.Request, resp: falcon.Response, upstream_resp: UpstreamResponse
    ) -> None:
        status = upstream_resp.status
        if status >= 400 and not _is_json(upstream_resp.get("content-type") or ""):
            # An upstream error page we cannot vouch for: never pass its body on.
            upstream_resp.close()
            write_problem(
                req,
                resp,
                status,
                detail="The upstream service returned an error.",
                code="upstream_error",
            )
            return
        connection = upstream_resp.get("connection")
        named = {t.strip().lower() for t in connection.split(",")} if connection else set()
        for name, value in upstream_resp.headers:
            lname = name.lower()
            if lname in _RESPONSE_DROP or lname in named or lname.startswith("access-control-"):
                continue
            resp.append_header(name, value)
        resp.status = status
        length = upstream_resp.get("content-length")
        if req.method == "HEAD" or status in (204, 304):
            if length is not None and length.isdigit() and req.method == "HEAD":
                resp.content_length = int(length)
            upstream_resp.release()
            return
        if length is not None and length.isdigit() and int(length) > _BUFFER_LIMIT:
            resp.content_length = int(length)
            resp.stream = _Relay(upstream_resp, upstream_resp.stream(_CHUNK))
            return
        # PERF: a small body in one read; Falcon then sets Content-Length itself. An
        # unsized (chunked, until-close) one is buffered up to the same limit, so a broken
        # one still becomes a clean 502 rather than a response cut short.
        pieces = upstream_resp.stream(_CHUNK)
        buffered: list[bytes] = []
        size = 0
        for piece in pieces:
            buffered.append(piece)
            size += len(piece)
            if size > _BUFFER_LIMIT:
                resp.stream = _Relay(upstream_resp, itertools.chain(buffered, pieces))
                return
        resp.data = b"".join(buffered)


class _Relay:
    """Streams a large upstream body; the connection is pooled only if it was read to the end."""

    def __init__(self, upstream_resp: UpstreamResponse, pieces: Iterator[bytes]) -> None:
        self._resp = upstream_resp
        self._pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        # NOTE: a failure here comes after the status line went out: it propagates, and
        # gunicorn cuts the client's response short rather than let it look complete.
        return self._pieces

    def close(self) -> None:
        """Drop the connection if the body was not read to the end."""
        self._resp.close()


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _timed_out() -> falcon.HTTPGatewayTimeout:
    return falcon.HTTPGatewayTimeout(
        description="The upstream service did not answer in time.", code="upstream_timeout"
    )


def _invalid_token(description: str) -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(
        title="Unauthorized",
        description=description,
        challenges=[f'Bearer error="invalid_token", error_description="{description}"'],
        code="invalid_token",
    )


def _too_large(limit: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(
        description=f"The request body exceeds {limit} bytes.",
        code="body_too_large",
    )
