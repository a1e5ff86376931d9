"""End to end through the gateway with the real auth service, both under gunicorn."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from gateway_support import (
    Gateway,
    launch_gateway,
)
from problem_observer import observe
from process_support import running_auth_service

from authgate_common.problem_types import ProblemType

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def auth_url(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[str]:
    """The auth service on SQLite with cheap bcrypt, migrated, under gunicorn."""
    var = tmp_path_factory.mktemp("auth")
    with running_auth_service(var, REDIS_URL=redis_url, LOG_FORMAT="console") as url:
        yield url


@pytest.fixture(scope="module")
def front(auth_url: str, redis_url: str) -> Iterator[Gateway]:
    """The gateway with its default routes, in front of the real auth service."""
    gw = launch_gateway(
        {
            "AUTH_SERVICE_URL": auth_url,
            "REDIS_URL": redis_url,
            "GATEWAY_RATE_LIMIT_KEY_PREFIX": f"test-gw:{uuid.uuid4().hex}:rl:",
        }
    )
    yield gw
    gw.stop()


def bearer(token: str) -> dict[str, str]:
    """Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def test_register_login_me_refresh_logout(front: Gateway):
    base = f"{front.url}/api/v1"
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery"
    created = requests.post(
        f"{base}/auth/register",
        timeout=10,
        json={"email": email, "password": password, "full_name": "E2E"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["email"] == email
    assert "hashed_password" not in created.text
    assert created.headers["RateLimit-Limit"] == "20"

    login = requests.post(
        f"{base}/auth/login", json={"email": email, "password": password}, timeout=10
    )
    assert login.status_code == 200, login.text
    assert login.headers["Cache-Control"] == "no-store"
    pair = login.json()
    assert pair["token_type"] == "bearer"

    me = requests.get(f"{base}/auth/me", headers=bearer(pair["access_token"]), timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email
    assert me.headers["X-Content-Type-Options"] == "nosniff"
    assert me.headers["Server"] == "authgate"

    anonymous = requests.get(f"{base}/auth/me", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    observe(anonymous.json(), ProblemType.MISSING_TOKEN)

    refreshed = requests.post(
        f"{base}/auth/refresh", timeout=10, json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    new_pair = refreshed.json()
    assert new_pair["refresh_token"] != pair["refresh_token"]
    me2 = requests.get(f"{base}/auth/me", headers=bearer(new_pair["access_token"]), timeout=10)
    assert me2.status_code == 200

    not_admin = requests.get(f"{base}/users", headers=bearer(new_pair["access_token"]), timeout=10)
    assert not_admin.status_code == 403  # the auth service's answer, passed through
    assert not_admin.headers["Content-Type"] == "application/problem+json"

    logout = requests.post(
        f"{base}/auth/logout", json={"refresh_token": new_pair["refresh_token"]}, timeout=10
    )
    assert logout.status_code == 204, logout.text

    revoked = requests.get(f"{base}/auth/me", headers=bearer(new_pair["access_token"]), timeout=10)
    assert revoked.status_code == 401
    assert revoked.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert "revoked" in revoked.headers["WWW-Authenticate"]  # refused at the gateway
    observe(revoked.json(), ProblemType.INVALID_TOKEN)


def test_traversal_against_real_auth(front: Gateway):
    status = requests.Session()
    req = requests.Request("GET", f"{front.url}/api/v1/auth/%2e%2e/users").prepare()
    req.url = f"{front.url}/api/v1/auth/%2e%2e/users"
    resp = status.send(req, timeout=10)
    assert resp.status_code == 401
    observe(resp.json(), ProblemType.MISSING_TOKEN)


def test_jwks_and_spec_through_gateway(front: Gateway):
    jwks = requests.get(f"{front.url}/.well-known/jwks.json", timeout=10)
    assert jwks.status_code == 200
    assert jwks.json()["keys"][0]["kid"]
    spec = requests.get(f"{front.url}/openapi.json", timeout=10)
    assert spec.status_code == 200
    assert spec.json()["servers"] == [{"url": "/"}]
    ready = requests.get(f"{front.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"upstream:/api/v1/auth": "ok", "redis": "ok"}


def test_wrong_password_passes_through_as_401(front: Gateway):
    resp = requests.post(
        f"{front.url}/api/v1/auth/login",
        timeout=10,
        json={"email": "nobody@example.com", "password": "wrong password"},
    )
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["request_id"] == resp.headers["X-Request-ID"]
