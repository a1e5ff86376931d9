"""create_app(settings): build every collaborator once and wire the Falcon app."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import requests
from opentelemetry.trace import TracerProvider
from requests.adapters import HTTPAdapter

from authgate_common.secrets_file import internal_api_token
from authgate_common.tracing import RequestTracing, build_tracer_provider
from gateway_service.client import ClientAddress
from gateway_service.context import GatewayRequest
from gateway_service.docs import Docs, Health, OpenAPIDocument, Ready
from gateway_service.metrics import Metrics, MetricsResource
from gateway_service.middleware import Cors, RequestContext, SecurityHeaders
from gateway_service.problems import handle_unexpected, serialize_error
from gateway_service.proxy import ProxySink, Upstream
from gateway_service.ratelimit import MemoryStore, RedisStore, Store
from gateway_service.revocations import RevokedSessions
from gateway_service.routes import RouteTable, load_spec
from gateway_service.settings import Settings
from gateway_service.tokens import JwksKeys, TokenVerifier
from gateway_service.tracing import INSTRUMENTATION_NAME, UpstreamTracing
from gateway_service.upstream import plain_session

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, tracer_provider: TracerProvider | None = None
) -> falcon.App[GatewayRequest, falcon.Response]:
    """Build the gateway: routes from config + spec, verifier, limiter, proxy, own endpoints.

    Tracing is on when a `tracer_provider` is passed (tests) or OTEL_EXPORTER_OTLP_ENDPOINT
    is set; otherwise no tracing code runs at all.
    """
    if tracer_provider is None:
        tracer_provider = build_tracer_provider(
            settings.otel_exporter_otlp_endpoint, settings.otel_service_name
        )
    spec = load_spec(settings.spec_path)
    table = RouteTable(settings, spec)
    metrics = Metrics(settings.prometheus_multiproc_dir) if settings.metrics else None
    names = _upstream_names(settings, table)
    upstreams = {
        url: Upstream(url, settings, name=names[url], metrics=metrics) for url in table.upstreams
    }
    keys_session = _own_session()
    keys = None if settings.jwt_algorithms == ("HS256",) else JwksKeys(settings, keys_session)
    revoked = RevokedSessions(
        settings,
        keys_session,
        internal_api_token(settings.internal_api_token, settings.var_dir),
        on_failure=metrics.revocation_feed_failures.inc if metrics is not None else None,
    )
    # NOTE: once now, so a fresh worker knows the last hour's revocations before it serves;
    # a failure is logged and the poller thread retries every interval.
    revoked.poll()
    revoked.start()
    verifier = TokenVerifier(settings, keys, revoked=revoked)
    if keys is not None and not keys.prefetch():
        # NOTE: not fatal: the auth service may start after us; keys load on first use.
        log.warning("JWKS not available at start-up; will retry on first use")
    store: Store = (
        RedisStore.from_url(settings.redis_url, settings.redis_timeout_seconds)
        if settings.redis_url
        else MemoryStore()
    )

    traced = tracer_provider is not None
    middleware: list[Any] = [
        RequestContext(metrics, settings.access_log, ClientAddress(settings), traced=traced),
        SecurityHeaders(settings),
        Cors(settings),
    ]
    if tracer_provider is not None:
        # First, so its span is current for the rest and ends after the access log.
        middleware.insert(0, RequestTracing(tracer_provider, INSTRUMENTATION_NAME))
    app = falcon.App(request_type=GatewayRequest, middleware=middleware, cors_enable=False)
    # NOTE: the gateway forwards bodies untouched; never let Falcon parse forms.
    app.req_options.auto_parse_form_urlencoded = False
    app.resp_options.secure_cookies_by_default = True
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)

    docs = Docs()
    app.add_route("/healthz", Health())
    checks = {f"upstream:{name}": url for url, name in names.items()}
    app.add_route("/readyz", Ready(checks, keys_session, store))
    app.add_route("/openapi.json", OpenAPIDocument(spec))
    app.add_route("/docs", docs)
    app.add_route("/docs/assets/{name}", docs, suffix="asset")
    if metrics is not None:
        app.add_route("/metrics", MetricsResource(metrics))
    tracing = UpstreamTracing(tracer_provider) if tracer_provider is not None else None
    app.add_sink(ProxySink(settings, table, upstreams, verifier, store, metrics, tracing), "/")
    return app


def _own_session() -> requests.Session:
    """The session for the gateway's own calls (JWKS, readiness): no env proxies or cookies."""
    session = plain_session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=2, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _upstream_names(settings: Settings, table: RouteTable) -> dict[str, str]:
    """Name each upstream by its first route prefix, so readiness and metrics never show a host."""
    return {
        url: next(r.prefix for r in settings.routes if r.upstream == url) for url in table.upstreams
    }
