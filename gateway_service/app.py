"""create_app(settings): build every collaborator once and wire the Falcon app."""

from __future__ import annotations

import falcon

from gateway_service.docs import Docs, Health, OpenAPIDocument, Ready
from gateway_service.middleware import Cors, RequestContext, SecurityHeaders
from gateway_service.problems import handle_unexpected, serialize_error
from gateway_service.proxy import ProxySink, Upstream, make_session
from gateway_service.ratelimit import MemoryStore, RedisStore, Store
from gateway_service.routes import RouteTable, load_spec
from gateway_service.settings import Settings
from gateway_service.tokens import JwksKeys, TokenVerifier


def create_app(settings: Settings) -> falcon.App:
    """Build the gateway: routes from config + spec, verifier, limiter, proxy, own endpoints."""
    spec = load_spec(settings.spec_path)
    table = RouteTable(settings, spec)
    upstreams = {url: Upstream(url, settings) for url in table.upstreams}
    keys_session = make_session(2)
    keys = None if settings.jwt_algorithms == ("HS256",) else JwksKeys(settings, keys_session)
    verifier = TokenVerifier(settings, keys)
    store: Store = (
        RedisStore.from_url(settings.redis_url, settings.redis_timeout_seconds)
        if settings.redis_url
        else MemoryStore()
    )

    app = falcon.App(
        middleware=[RequestContext(), SecurityHeaders(settings), Cors(settings)],
        cors_enable=False,
    )
    # NOTE: the gateway forwards bodies untouched; never let Falcon parse forms.
    app.req_options.auto_parse_form_urlencoded = False
    app.resp_options.secure_cookies_by_default = True
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)

    docs = Docs()
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(_check_names(settings, table), keys_session, store))
    app.add_route("/openapi.json", OpenAPIDocument(spec))
    app.add_route("/docs", docs)
    app.add_route("/docs/assets/{name}", docs, suffix="asset")
    app.add_sink(ProxySink(settings, table, upstreams, verifier, store), "/")
    return app


def _check_names(settings: Settings, table: RouteTable) -> dict[str, str]:
    """Name each upstream by its first route prefix, so readiness never shows a host."""
    names: dict[str, str] = {}
    for url in table.upstreams:
        prefix = next(r.prefix for r in settings.routes if r.upstream == url)
        names[f"upstream:{prefix}"] = url
    return names
