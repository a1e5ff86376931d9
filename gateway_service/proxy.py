"""The proxy sink: authorise, rate limit, forward faithfully, map upstream failures."""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
import time
from collections.abc import Iterator
from http.client import HTTPException
from typing import Any
from urllib.parse import quote, urlsplit

import falcon
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, Timeout
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import SKIP_HEADER

from authgate_common.bearer import bearer_token
from authgate_common.problem_types import ProblemType
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
from gateway_service.upstream import Deadlines, Exchange, session_pool, upstream_session

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
_NOT_ADDED = ("User-Agent", "Accept-Encoding")
_EXCHANGE_FAILURES = (HTTPError, HTTPException, OSError)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# RFC 9110 5.5: a field value carries no control character but HTAB.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search
# A length in ASCII digits a 64-bit count can hold; anything else is refused.
_LENGTH = re.compile(r"[0-9]{1,18}").fullmatch


class Upstream:
    """One upstream base URL: its session, connection pool and circuit breaker."""

    def __init__(
        self, base_url: str, settings: Settings, name: str, metrics: Metrics | None
    ) -> None:
        """Build the session and its pool once per process.

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
        ca_file = settings.upstream_ca_file
        self.session = upstream_session(
            base_url, settings.pool_size, str(ca_file) if ca_file is not None else True
        )
        # PERF: the hot path calls the adapter's pool itself, not Session.send (upstream.py).
        self.pool = session_pool(self.session, base_url)
        # Service discovery (discovery.py): a DNS name's addresses in turn, a pool each.
        self.addresses = address_book_for(
            base_url, settings.dns_refresh_seconds, settings.breaker_reset_seconds
        )
        self._pools: dict[str, HTTPConnectionPool] = {}
        self.connect_timeout = settings.connect_timeout
        self.read_timeout = settings.read_timeout

    def pick(self) -> tuple[str | None, HTTPConnectionPool]:
        """The address to use next (None without discovery) and its pool."""
        if self.addresses is None:
            return None, self.pool
        address = self.addresses.next_address()
        pool = self._pools.get(address)
        if pool is None:
            url = url_with_address(self.base_url, address)
            # NOTE: the same adapter (TLS, pool size, exact targets) serves every address.
            self.session.mount(url, self.session.get_adapter(self.base_url))
            pool = self._pools.setdefault(address, session_pool(self.session, url))
        return address, pool

    def timeout(self, exchange: Exchange) -> Timeout:
        """The per-step timeouts, never past the exchange's deadline."""
        left = max(exchange.deadline - time.monotonic(), 0.001)
        return Timeout(connect=min(self.connect_timeout, left), read=min(self.read_timeout, left))


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
        self._deadlines = Deadlines(settings.request_deadline)

    def __call__(self, req: falcon.Request, resp: falcon.Response, **kwargs: Any) -> None:
        """Handle one proxied request end to end."""
        coding = req.env.get("HTTP_TRANSFER_ENCODING")
        if coding is not None and coding.strip().lower() != "chunked":
            # SECURITY: gunicorn removes only the chunked framing; a body still in gzip (or
            # any other coding) would reach the upstream as if it were plain.
            raise falcon.HTTPNotImplemented(
                description="Only the chunked transfer coding is supported.",
                code=ProblemType.NOT_IMPLEMENTED,
            )
        decision = self._table.resolve(req.method, req.path)
        if decision is None:
            raise falcon.HTTPNotFound(description="No route matches this path.")
        if decision.allow is not None:
            # Before any token check: the method is wrong whoever asks.
            raise falcon.HTTPMethodNotAllowed(
                list(decision.allow),
                description="The path does not support this method.",
                code=ProblemType.METHOD_NOT_ALLOWED,
            )
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
                code=ProblemType.MISSING_TOKEN,
            )
        try:
            return self._verifier.verify(token)
        except TokenError as ex:
            raise _invalid_token(ex.description) from None
        except KeysUnavailable:
            raise falcon.HTTPServiceUnavailable(
                description="Token keys are not available yet; try again shortly.",
                headers={"Retry-After": "5"},
                code=ProblemType.KEYS_UNAVAILABLE,
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
                code=ProblemType.RATE_LIMIT_UNAVAILABLE,
            )
        if sessions_closed:
            raise falcon.HTTPServiceUnavailable(
                description="Session checks are unavailable; try again shortly.",
                headers={"Retry-After": "1"},
                code=ProblemType.SESSION_CHECK_UNAVAILABLE,
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
                code=ProblemType.RATE_LIMITED,
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
                code=ProblemType.UPSTREAM_UNAVAILABLE,
            )
        # SECURITY: the path sent is the normalised one we authorised, re-encoded once.
        target = upstream.prefix + quote(req.path, safe=_PATH_SAFE)
        query = req.env.get("QUERY_STRING")
        if query:
            target += "?" + query
        if body is not None:
            headers["Content-Length"] = str(len(body))
        for name in _NOT_ADDED:
            # urllib3 adds these unless told not to; the upstream gets the client's or none.
            headers.setdefault(name, SKIP_HEADER)
        started = time.perf_counter()
        exchange = self._deadlines.begin(target)
        try:
            if self._tracing is None:
                self._exchange(req, resp, upstream, exchange, headers, body, decision)
            else:
                with self._tracing.call(
                    req.method, upstream.base_url, target, decision.prefix, headers
                ) as span:
                    if "traceparent" not in headers:
                        # NOTE: a no-op provider (OTEL_SDK_DISABLED) injects nothing for a
                        # request that came without a trace; upstreams still get one.
                        headers["traceparent"] = new_traceparent()
                    self._exchange(req, resp, upstream, exchange, headers, body, decision)
                    self._tracing.record_status(span, resp.status_code)
        finally:
            if not isinstance(resp.stream, _Relay):
                self._deadlines.end(exchange)
            if self._metrics is not None:
                self._metrics.observe_upstream(upstream.name, time.perf_counter() - started)

    def _exchange(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        upstream: Upstream,
        exchange: Exchange,
        headers: dict[str, str],
        body: bytes | None,
        decision: Decision,
    ) -> None:
        upstream_resp, length = self._send(upstream, exchange, req.method, headers, body)
        try:
            self._relay(req, resp, upstream_resp, length, exchange, decision.spec_bodies)
        except _EXCHANGE_FAILURES as ex:
            _drop(upstream_resp)
            upstream.breaker.record_failure()
            if _failure(ex, exchange) == "timeout":
                raise _timed_out() from None
            raise falcon.HTTPBadGateway(
                description="The upstream service failed.", code=ProblemType.UPSTREAM_FAILED
            ) from None

    def _send(
        self,
        upstream: Upstream,
        exchange: Exchange,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> tuple[BaseHTTPResponse, int | None]:
        """The upstream's answer, its head checked, and the body length it announced."""
        # NOTE: never /auth/refresh (docs/architecture.md, gateway step 7): it is a POST,
        # so this rule covers it.
        retryable = method in _IDEMPOTENT
        attempts = 1 + (self._retries if retryable else 0)
        for attempt in range(attempts):
            address, pool = upstream.pick()
            try:
                result = pool.urlopen(
                    method,
                    exchange.target,
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=upstream.timeout(exchange),
                    preload_content=False,
                    decode_content=False,
                )
            except _EXCHANGE_FAILURES as ex:
                failure = _failure(ex, exchange)
                if upstream.addresses and address and _nothing_sent(ex, failure):
                    # A refused or vanished replica (discovery.py): skip this address; a
                    # retry, if the method allows one, takes the next.
                    upstream.addresses.mark_failed(address)
                    if attempt + 1 < attempts:
                        continue
                # Nothing (or nothing usable) came back: safe to repeat only if idempotent.
                if failure in ("unreachable", "dropped") and attempt + 1 < attempts:
                    continue
                upstream.breaker.record_failure()
                raise _failed(failure) from None
            except ValueError:
                # http.client refuses a header or target it cannot put on the wire.
                upstream.breaker.record_success()
                raise falcon.HTTPBadRequest(description="A request header is invalid.") from None
            try:
                length = _checked_head(result)
            except _BadHead:
                _drop(result)
                upstream.breaker.record_failure()
                raise _failed("bad") from None
            if result.status in (502, 503, 504):
                upstream.breaker.record_failure()
            else:
                upstream.breaker.record_success()
            return result, length
        raise AssertionError("unreachable")  # pragma: no cover

    def _relay(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        upstream_resp: BaseHTTPResponse,
        length: int | None,
        exchange: Exchange,
        spec_bodies: bool,
    ) -> None:
        status = upstream_resp.status
        upstream_headers = upstream_resp.headers
        content_type = upstream_headers.get("content-type") or ""
        # NOTE: a spec route's HTML error is a page the spec declares (the OAuth pages).
        vouched = _is_json(content_type) or (spec_bodies and _is_html(content_type))
        if status >= 400 and not vouched:
            # An upstream error page we cannot vouch for: never pass its body on.
            _drop(upstream_resp)
            write_problem(
                req,
                resp,
                ProblemType.UPSTREAM_ERROR,
                status=status,
                detail="The upstream service returned an error.",
            )
            return
        connection = upstream_headers.get("connection")
        named = {t.strip().lower() for t in connection.split(",")} if connection else set()
        for name, value in upstream_headers.items():
            lname = name.lower()
            if lname in _RESPONSE_DROP or lname in named or lname.startswith("access-control-"):
                continue
            resp.append_header(name, value)
        resp.status = status
        if req.method == "HEAD" or status in (204, 304):
            if length is not None and req.method == "HEAD":
                resp.content_length = length
            upstream_resp.drain_conn()
            upstream_resp.release_conn()
            return
        # NOTE: the length announced is always the one the body is framed by: the upstream's
        # Content-Length only when it framed the body by it (never beside chunked).
        pieces = upstream_resp.stream(_CHUNK, decode_content=False)
        if length is not None and length > _BUFFER_LIMIT:
            resp.content_length = length
            resp.stream = _Relay(upstream_resp, pieces, exchange, self._deadlines)
            return
        # PERF: a small body in one read; Falcon then sets Content-Length itself. An
        # unsized (chunked, until-close) one is buffered up to the same limit, so a broken
        # one still becomes a clean 502 rather than a response cut short.
        buffered: list[bytes] = []
        size = 0
        for piece in pieces:
            buffered.append(piece)
            size += len(piece)
            if size > _BUFFER_LIMIT:
                resp.stream = _Relay(
                    upstream_resp, itertools.chain(buffered, pieces), exchange, self._deadlines
                )
                return
        upstream_resp.release_conn()
        resp.data = b"".join(buffered)


class _Relay:
    """Streams a large upstream body; the connection is pooled only if it was read to the end."""

    def __init__(
        self,
        upstream_resp: BaseHTTPResponse,
        pieces: Iterator[bytes],
        exchange: Exchange,
        deadlines: Deadlines,
    ) -> None:
        self._resp = upstream_resp
        self._pieces = pieces
        self._exchange = exchange
        self._deadlines = deadlines

    def __iter__(self) -> Iterator[bytes]:
        # NOTE: a failure here comes after the status line went out: it propagates, and
        # gunicorn cuts the client's response short rather than let it look complete.
        return self._pieces

    def close(self) -> None:
        """End the exchange; drop the connection if the body was not read to the end."""
        self._deadlines.end(self._exchange)
        _drop(self._resp)


class _BadHead(Exception):
    """The upstream's status line or header fields cannot be relayed as they are."""


def _checked_head(upstream_resp: BaseHTTPResponse) -> int | None:
    """The Content-Length the body is framed by (None: chunked or until close).

    SECURITY: http.client is lenient where a proxy must not be: it takes any status up to
    999, control bytes in header values and a Content-Length in Unicode digits, and it
    frames a body chunked while a Content-Length says otherwise. None of that is relayed.
    """
    # http.client skips 100 Continue itself; any other interim answer cannot be relayed.
    if not 200 <= upstream_resp.status <= 599:
        raise _BadHead
    fields = upstream_resp.headers
    for name, value in fields.items():
        if not _TOKEN(name) or _CONTROL(value):
            raise _BadHead
    coding = fields.get("transfer-encoding")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise _BadHead
        return None
    length = fields.get("content-length")
    if length is None:
        return None
    values = {value.strip() for value in length.split(",")}
    text = values.pop()
    if values or not _LENGTH(text):
        raise _BadHead
    return int(text)


def _failure(ex: Exception, exchange: Exchange) -> str:
    """Why an exchange failed: unreachable, dropped, timeout or bad (a broken answer)."""
    if exchange.expired:
        return "timeout"
    if isinstance(ex, (NewConnectionError, SSLError)):
        return "unreachable"
    if isinstance(ex, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(ex, ProtocolError) and isinstance(ex.args[-1], ConnectionError):
        # RemoteDisconnected is a ConnectionError: closed before any response byte.
        return "dropped"
    return "bad"


def _nothing_sent(ex: Exception, failure: str) -> bool:
    """Whether the exchange failed before a connection was made (refused, or no answer to
    the connect): the address is at fault, not the request."""
    return failure == "unreachable" or isinstance(ex, ConnectTimeoutError)


def _failed(failure: str) -> falcon.HTTPError:
    if failure == "timeout":
        return _timed_out()
    if failure == "bad":
        return falcon.HTTPBadGateway(
            description="The upstream service failed.", code=ProblemType.UPSTREAM_FAILED
        )
    return falcon.HTTPBadGateway(
        description="The upstream service could not be reached.",
        code=ProblemType.UPSTREAM_UNREACHABLE,
    )


def _drop(upstream_resp: BaseHTTPResponse) -> None:
    """Close the connection (a half-read body would poison the next exchange)."""
    upstream_resp.close()
    upstream_resp.release_conn()


def _is_html(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/html"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _timed_out() -> falcon.HTTPGatewayTimeout:
    return falcon.HTTPGatewayTimeout(
        description="The upstream service did not answer in time.",
        code=ProblemType.UPSTREAM_TIMEOUT,
    )


def _invalid_token(description: str) -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(
        title="Unauthorized",
        description=description,
        challenges=[f'Bearer error="invalid_token", error_description="{description}"'],
        code=ProblemType.INVALID_TOKEN,
    )


def _too_large(limit: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(
        description=f"The request body exceeds {limit} bytes.",
        code=ProblemType.CONTENT_TOO_LARGE,
    )
