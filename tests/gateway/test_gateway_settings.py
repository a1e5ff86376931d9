"""Settings: fail fast with the variable's name; routes and policies from env and spec."""

from __future__ import annotations

import json

import pytest

from gateway_service.routes import RouteTable, load_spec
from gateway_service.settings import Rate, Settings, SettingsError


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
        ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT"),
        ({"AUTH_SERVICE_URL": "ftp://x"}, "AUTH_SERVICE_URL"),
        ({"RATE_LIMIT_DEFAULT": "lots"}, "RATE_LIMIT_DEFAULT"),
        ({"RATE_LIMIT_AUTH": "0/minute"}, "RATE_LIMIT_AUTH"),
        ({"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        ({"JWT_ALGORITHM": "HS256"}, "JWT_SECRET"),
        ({"JWT_ALGORITHM": "HS256", "JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"JWT_ALGORITHM": "HS256,RS256", "JWT_SECRET": "x" * 40}, "JWT_ALGORITHM"),
        ({"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"),
        ({"GATEWAY_ROUTES": "{not json"}, "GATEWAY_ROUTES"),
        (
            {"GATEWAY_ROUTES": json.dumps([{"prefix": "x", "upstream": "http://a"}])},
            "GATEWAY_ROUTES",
        ),
        (
            {
                "GATEWAY_ROUTES": json.dumps(
                    [{"prefix": "/x", "upstream": "http://a", "auth": "maybe"}]
                )
            },
            "GATEWAY_ROUTES",
        ),
        (
            {"GATEWAY_ROUTES": json.dumps([{"prefix": "/x", "upstream": "http://a", "color": 1}])},
            "GATEWAY_ROUTES",
        ),
        ({"RATE_LIMIT_FAIL_OPEN": "perhaps"}, "RATE_LIMIT_FAIL_OPEN"),
        ({"GATEWAY_READ_TIMEOUT": "-1"}, "GATEWAY_READ_TIMEOUT"),
        ({"INTERNAL_API_TOKEN": "x" * 31}, "INTERNAL_API_TOKEN"),
        ({"GATEWAY_REVOCATION_POLL_SECONDS": "0"}, "GATEWAY_REVOCATION_POLL_SECONDS"),
        ({"GATEWAY_REVOCATION_FAIL_OPEN": "perhaps"}, "GATEWAY_REVOCATION_FAIL_OPEN"),
    ],
)
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_defaults():
    settings = Settings.from_env({})
    assert settings.auth_service_url == "http://127.0.0.1:8001"
    assert settings.jwt_algorithms == ("RS256",)
    assert (settings.jwt_issuer, settings.jwt_audience) == ("authgate", "authgate-api")
    assert settings.rate_limit_default == Rate(600, 60)
    assert settings.rate_limit_auth == Rate(20, 60)
    assert settings.effective_jwks_url == "http://127.0.0.1:8001/.well-known/jwks.json"
    assert [r.prefix for r in settings.routes] == [
        "/api/v1/auth",
        "/api/v1/users",
        "/.well-known/jwks.json",
        "/oauth",
        "/userinfo",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ]
    assert settings.redis_url is None
    # SECURITY: with Redis down a revoked session must not pass unless the operator says so.
    assert settings.revocation_fail_open is False
    assert settings.revocation_poll_seconds == 2.0
    assert settings.revocation_feed_url == "http://127.0.0.1:8001/internal/v1/revoked-sessions"


def test_internal_paths_are_never_routed():
    catch_all = [{"prefix": "/", "upstream": "http://auth:8001", "auth": "none"}]
    settings = Settings.from_env({"GATEWAY_ROUTES": json.dumps(catch_all)})
    table = RouteTable(settings, load_spec(settings.spec_path))
    assert table.resolve("GET", "/internals") is not None  # only the exact segment
    for path in ("/internal", "/internal/", "/internal/v1/revoked-sessions", "/Internal/v1/x"):
        assert table.resolve("GET", path) is None, path


def test_extra_route_by_configuration():
    routes = [
        {
            "prefix": "/api/v1/orders/",
            "upstream": "http://orders:9000/",
            "auth": "required",
            "rate_limit": "50/second",
        }
    ]
    settings = Settings.from_env({"GATEWAY_ROUTES": json.dumps(routes)})
    table = RouteTable(settings, load_spec(settings.spec_path))
    decision = table.resolve("GET", "/api/v1/orders/7")
    assert decision is not None
    assert (decision.upstream, decision.access, decision.rate) == (
        "http://orders:9000",
        "required",
        Rate(50, 1),
    )
    assert table.resolve("GET", "/api/v1/ordersx") is None
    assert table.resolve("GET", "/api/v1/auth/me").upstream == "http://127.0.0.1:8001"


def test_auth_policy_from_spec_operations():
    settings = Settings.from_env({})
    table = RouteTable(settings, load_spec(settings.spec_path))
    login = table.resolve("POST", "/api/v1/auth/login")
    assert (login.access, login.policy, login.rate, login.fail_open) == (
        "none",
        "auth:login",
        Rate(20, 60),
        False,
    )
    me = table.resolve("GET", "/api/v1/auth/me")
    assert (me.access, me.policy, me.fail_open) == ("required", "default", True)


def test_unknown_rate_limited_operation_refused():
    settings = Settings.from_env({"GATEWAY_AUTH_RATE_LIMITED_OPERATIONS": "login,lgoin"})
    with pytest.raises(SettingsError, match="lgoin"):
        RouteTable(settings, load_spec(settings.spec_path))


def test_missing_spec_refused(tmp_path):
    with pytest.raises(SettingsError, match="GATEWAY_OPENAPI_PATH"):
        load_spec(tmp_path / "nope.yaml")
