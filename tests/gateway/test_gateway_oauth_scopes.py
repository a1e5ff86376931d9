"""OAuth tokens through a real gateway: client identity headers and scope-guarded routes.

Tokens are minted like the auth service's OAuth server signs them (README "Scopes and
client tokens at the gateway"): first-party (no client_id), OAuth user (client_id, scope,
sid, role) and client-credential (sub == client_id, scope, no sid, no role).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from gateway_support import Echo, Gateway, Minter, gateway_env, launch_gateway
from problem_observer import assert_problem_type
from test_gateway_forwarding import raw_request

from authgate_common.problem_types import ProblemType
from gateway_service.settings import Settings, SettingsError, default_routes

REPORTS = "/api/v1/reports/7"
ORDERS = "/api/v1/orders/1"
USER_HEADERS = ("x-user-id", "x-user-roles", "x-session-id")
CLIENT_HEADERS = ("x-client-id", "x-scopes")
KEY_PREFIX = f"test-gw-oauth:{uuid.uuid4().hex}:rl:"


def routes_with(echo: Echo, *extra: dict[str, Any]) -> str:
    """The test routes of gateway_env, plus these."""
    return json.dumps([*json.loads(gateway_env(echo)["GATEWAY_ROUTES"]), *extra])


SCOPED = (
    {
        "prefix": "/api/v1/reports",
        "upstream": "",  # filled in with the echo's URL
        "auth": "required",
        "scopes": ["reports:read", "reports:export"],
    },
    # A spec route with a scope: what the spec makes public stays public.
    {"prefix": "/api/v1/auth", "upstream": "", "auth": "spec", "scopes": ["account"]},
)


@pytest.fixture(scope="module")
def front(echo: Echo, redis_url: str) -> Iterator[Gateway]:
    """A gateway with Redis (revocation and shared buckets) and two scope-guarded routes."""
    routes = routes_with(echo, *({**route, "upstream": echo.url} for route in SCOPED))
    gw = launch_gateway(
        gateway_env(
            echo,
            GATEWAY_ROUTES=routes,
            REDIS_URL=redis_url,
            GATEWAY_RATE_LIMIT_KEY_PREFIX=KEY_PREFIX,
        ),
        workers=1,
    )
    yield gw
    gw.stop()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=KEY_PREFIX + "*"):
        client.delete(key)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_token(minter: Minter, client_id: str = "billing-bot", scope: str = "") -> str:
    return minter.token(sub=client_id, client_id=client_id, scope=scope, sid=None, role=None)


def upstream_saw(front: Gateway, path: str, token: str) -> dict[str, str]:
    """The headers the echo upstream received for a GET through the gateway."""
    result = requests.get(f"{front.url}{path}", headers=bearer(token), timeout=10)
    assert result.status_code == 200, result.text
    return dict(result.json()["headers"])


def test_client_credential_token_reaches_upstream_as_the_client(front: Gateway, minter: Minter):
    token = client_token(minter, scope="orders:read orders:write")
    seen = upstream_saw(front, ORDERS, token)
    assert seen["x-client-id"] == "billing-bot"
    assert seen["x-scopes"] == "orders:read orders:write"
    assert not set(seen) & set(USER_HEADERS), seen


def test_access_log_names_the_client(front: Gateway, minter: Minter):
    token = client_token(minter, "logged-bot", "a")
    request_id = f"oauth-log-{uuid.uuid4().hex[:8]}"
    result = requests.get(
        f"{front.url}{ORDERS}", headers={**bearer(token), "X-Request-ID": request_id}, timeout=10
    )
    assert result.status_code == 200, result.text
    deadline = time.monotonic() + 5
    while request_id not in front.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [
        json.loads(text)
        for text in front.output().splitlines()
        if text.startswith("{") and request_id in text
    ]
    assert (line["user_id"], line["client_id"]) == (None, "logged-bot")


def test_oauth_user_token_brings_user_and_client_headers(front: Gateway, minter: Minter):
    token = minter.token(
        sub="user-7", sid="sess-7", role="admin", client_id="dashboard", scope="openid profile"
    )
    seen = upstream_saw(front, ORDERS, token)
    assert (seen["x-user-id"], seen["x-user-roles"], seen["x-session-id"]) == (
        "user-7",
        "admin",
        "sess-7",
    )
    assert (seen["x-client-id"], seen["x-scopes"]) == ("dashboard", "openid profile")


def test_first_party_token_brings_no_client_headers(front: Gateway, minter: Minter):
    seen = upstream_saw(front, ORDERS, minter.token(sub="user-8", sid="sess-8", role="user"))
    assert seen["x-user-id"] == "user-8"
    assert not set(seen) & set(CLIENT_HEADERS), seen


@pytest.mark.parametrize("kind", ["first-party", "client", "none"])
def test_spoofed_client_headers_never_reach_upstream(front: Gateway, minter: Minter, kind: str):
    tokens = {
        "first-party": minter.token(sub="user-9", sid="sess-9", role="user"),
        "client": client_token(minter, "real-client", "a"),
        "none": None,
    }
    token = tokens[kind]
    spoofed = [
        ("X-Client-Id", "forged-client"),
        ("x-client-id", "forged-2"),
        ("X-SCOPES", "admin everything"),
        ("x-Scopes", "forged"),
    ]
    auth = [("Authorization", f"Bearer {token}")] if token else []
    path = ORDERS if token else "/api/v1/catalog/items"
    status, _, body = raw_request(front, "GET", path, [*auth, *spoofed])
    assert status == 200, body
    seen = json.loads(body)["headers"]
    values = [(k, v) for k, v in seen if k in CLIENT_HEADERS]
    expected = [("x-client-id", "real-client"), ("x-scopes", "a")] if kind == "client" else []
    assert sorted(values) == expected


def test_route_scopes_missing_one_is_403_insufficient_scope(
    front: Gateway, echo: Echo, minter: Minter
):
    before = echo.hits()["echo"]
    for scope in ("", "reports:read", "reports:export other", "reports:readx reports:export"):
        result = requests.get(
            f"{front.url}{REPORTS}", headers=bearer(client_token(minter, scope=scope)), timeout=10
        )
        body = assert_problem_type(result, ProblemType.INSUFFICIENT_SCOPE)
        assert result.headers["WWW-Authenticate"] == (
            'Bearer error="insufficient_scope", scope="reports:read reports:export"'
        )
        assert body["request_id"] == result.headers["X-Request-ID"]
    assert echo.hits()["echo"] == before, "a refused request reached the upstream"


def test_route_scopes_all_present_pass(front: Gateway, minter: Minter):
    client = client_token(minter, scope="reports:export x reports:read")
    assert upstream_saw(front, REPORTS, client)["x-scopes"] == "reports:export x reports:read"
    user = minter.token(client_id="dash", scope="reports:read reports:export openid")
    assert upstream_saw(front, REPORTS, user)["x-client-id"] == "dash"


def test_route_scopes_refuse_first_party_tokens(front: Gateway, minter: Minter):
    # Our own login's tokens have no scopes, so they lack what the route asks.
    for token in (minter.token(role="admin"), minter.token()):
        result = requests.get(f"{front.url}{REPORTS}", headers=bearer(token), timeout=10)
        assert_problem_type(result, ProblemType.INSUFFICIENT_SCOPE)
        assert result.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')


def test_route_scopes_without_token_is_401(front: Gateway):
    result = requests.get(f"{front.url}{REPORTS}", timeout=10)
    assert_problem_type(result, ProblemType.MISSING_TOKEN)
    assert result.headers["WWW-Authenticate"] == "Bearer"


def test_scopes_on_a_spec_route_guard_only_its_token_operations(front: Gateway, minter: Minter):
    # POST /api/v1/auth/login is public in the spec: no token, no scope asked.
    login = requests.post(f"{front.url}/api/v1/auth/login", json={}, timeout=10)
    assert login.status_code == 200, login.text
    me = f"{front.url}/api/v1/auth/me"
    refused = requests.get(me, headers=bearer(minter.token()), timeout=10)
    assert_problem_type(refused, ProblemType.INSUFFICIENT_SCOPE)
    assert refused.headers["WWW-Authenticate"].endswith('scope="account"')
    allowed = requests.get(
        me, headers=bearer(minter.token(client_id="app", scope="account")), timeout=10
    )
    assert allowed.status_code == 200, allowed.text


@pytest.mark.parametrize(
    "overrides",
    [
        # A client_id, no session, yet a user's sub: not a token we issue.
        {"sub": "user-1", "client_id": "billing-bot", "scope": "a", "sid": None, "role": None},
        # A client's own token with a role it cannot have.
        {"sub": "bot", "client_id": "bot", "scope": "a", "sid": None, "role": "admin"},
        # An OAuth token without its scope claim, or with a malformed one.
        {"client_id": "dash", "scope": None},
        {"client_id": "dash", "scope": "a  b"},
        {"client_id": "dash", "scope": 'say"hi'},
        # A first-party token that claims a scope.
        {"scope": "reports:read reports:export"},
    ],
)
def test_tokens_of_no_known_kind_are_401(
    front: Gateway, echo: Echo, minter: Minter, overrides: dict[str, Any]
):
    before = echo.hits()["echo"]
    for path in (ORDERS, REPORTS):
        result = requests.get(
            f"{front.url}{path}", headers=bearer(minter.token(**overrides)), timeout=10
        )
        assert_problem_type(result, ProblemType.INVALID_TOKEN)
        assert result.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert echo.hits()["echo"] == before


def test_cached_tokens_keep_their_own_identity(front: Gateway, minter: Minter):
    # The verified-token cache is keyed by the whole token: a client, the same client
    # with other scopes, and a user whose id is the client's name stay apart, twice over.
    first = client_token(minter, "same", "a")
    second = client_token(minter, "same", "b c")
    user = minter.token(sub="same", sid="sess-same", role="user")
    for _ in range(2):
        assert upstream_saw(front, ORDERS, first)["x-scopes"] == "a"
        assert upstream_saw(front, ORDERS, second)["x-scopes"] == "b c"
        seen = upstream_saw(front, ORDERS, user)
        assert seen["x-user-id"] == "same"
        assert not set(seen) & set(CLIENT_HEADERS)


def test_client_tokens_have_their_own_rate_limit_bucket(
    front: Gateway, minter: Minter, redis_client: redis.Redis
):
    # No session to look up, and the budget is the client's, never a user's of that name.
    upstream_saw(front, ORDERS, client_token(minter, "bucket-bot", "a"))
    assert list(redis_client.scan_iter(match=f"{KEY_PREFIX}*:client:bucket-bot:*"))
    assert not list(redis_client.scan_iter(match=f"{KEY_PREFIX}*:user:bucket-bot:*"))


def test_default_routes_send_the_oauth_endpoints_to_the_auth_service():
    url = "http://auth:8001"
    routes = {r.prefix: (r.upstream, r.auth, r.scopes) for r in default_routes(url)}
    assert routes["/oauth"] == (url, "spec", ())
    assert routes["/userinfo"] == (url, "spec", ())
    assert routes["/api/v1/oauth-clients"] == (url, "spec", ())
    assert routes["/.well-known/openid-configuration"] == (url, "none", ())
    assert routes["/.well-known/oauth-authorization-server"] == (url, "none", ())
    loaded = Settings.from_env({"AUTH_SERVICE_URL": url})
    assert {r.prefix for r in loaded.routes} == set(routes)


def route_env(**route: Any) -> dict[str, str]:
    return {"GATEWAY_ROUTES": json.dumps([{"prefix": "/x", "upstream": "http://a", **route}])}


def test_route_scopes_are_read_in_order_without_repeats():
    settings = Settings.from_env(route_env(scopes=["b", "a:read", "b", "!#~[]"]))
    [route] = [r for r in settings.routes if r.prefix == "/x"]
    assert route.scopes == ("b", "a:read", "!#~[]")
    no_scopes = Settings.from_env(route_env(auth="none", scopes=[]))
    assert [r.scopes for r in no_scopes.routes if r.prefix == "/x"] == [()]


@pytest.mark.parametrize(
    ("route", "complaint"),
    [
        ({"scopes": "reports:read"}, "JSON list"),
        ({"scopes": {"a": 1}}, "JSON list"),
        ({"scopes": ["two words"]}, "not a scope"),
        ({"scopes": [""]}, "not a scope"),
        ({"scopes": ['quo"te']}, "not a scope"),
        ({"scopes": ["back\\slash"]}, "not a scope"),
        ({"scopes": ["caf\u00e9"]}, "not a scope"),
        ({"scopes": [7]}, "not a scope"),
        ({"scopes": ["a"], "auth": "none"}, "scopes need auth"),
        ({"scopes": ["a"], "auth": "optional"}, "scopes need auth"),
    ],
)
def test_bad_route_scopes_name_the_variable(route: dict[str, Any], complaint: str):
    with pytest.raises(SettingsError, match=f"GATEWAY_ROUTES.*'/x'.*{complaint}"):
        Settings.from_env(route_env(**route))
