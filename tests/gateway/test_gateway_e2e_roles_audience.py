"""Roles and audiences end to end: the real auth service and gateway under gunicorn, Redis.

A demoted admin's old token must stop working at once (it says role "admin"), and tokens
whose `aud` is an array are judged by membership, in both services.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from gateway_support import Echo, Gateway, launch_gateway
from jose import jwt
from process_support import running_auth_service

from auth_service.db.models import User

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
ORDERS = "/api/v1/orders/1"


@pytest.fixture(scope="module")
def auth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth")


@pytest.fixture(scope="module")
def auth_url(auth_root: Path, redis_url: str) -> Iterator[str]:
    """The auth service on SQLite, publishing revocations to Redis."""
    with running_auth_service(auth_root, REDIS_URL=redis_url) as url:
        yield url


@pytest.fixture(scope="module")
def front(auth_url: str, redis_url: str, echo: Echo) -> Iterator[Gateway]:
    """The gateway: the auth service's default routes, and /api/v1/orders on the echo."""
    gw = launch_gateway(
        {
            "AUTH_SERVICE_URL": auth_url,
            "REDIS_URL": redis_url,
            "GATEWAY_RATE_LIMIT_KEY_PREFIX": f"test-gw:{uuid.uuid4().hex}:rl:",
            "RATE_LIMIT_AUTH": "100000/minute",
            "RATE_LIMIT_DEFAULT": "100000/minute",
            "GATEWAY_ROUTES": json.dumps(
                [{"prefix": "/api/v1/orders", "upstream": echo.url, "auth": "required"}]
            ),
        }
    )
    yield gw
    gw.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_up(front: Gateway, auth_root: Path, *, admin: bool = False) -> dict[str, Any]:
    """Register through the gateway (promoted in the database, as create-admin would)."""
    email = f"u-{uuid.uuid4().hex[:12]}@example.com"
    made = requests.post(
        f"{front.url}/api/v1/auth/register",
        json={"email": email, "password": PASSWORD},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    if admin:
        engine = sqlalchemy.create_engine(f"sqlite:///{auth_root / 'auth.db'}")
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.update(User)
                .where(User.id == uuid.UUID(made.json()["id"]))
                .values(is_superuser=True)
            )
        engine.dispose()
    return {**made.json(), "access_token": log_in(front, email)}


def log_in(front: Gateway, email: str) -> str:
    result = requests.post(
        f"{front.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert result.status_code == 200, result.text
    token: str = result.json()["access_token"]
    return token


def roles_seen_upstream(front: Gateway, token: str) -> tuple[int, str | None]:
    """The gateway's status for an echo route, and the X-User-Roles the upstream got."""
    result = requests.get(f"{front.url}{ORDERS}", headers=bearer(token), timeout=10)
    if result.status_code != 200:
        return result.status_code, None
    return 200, dict(result.json()["headers"]).get("x-user-roles")


def test_demoted_admin_old_token_is_refused_at_once(front: Gateway, auth_root: Path) -> None:
    root = sign_up(front, auth_root, admin=True)
    ada = sign_up(front, auth_root, admin=True)
    assert roles_seen_upstream(front, ada["access_token"]) == (200, "admin")
    users = requests.get(
        f"{front.url}/api/v1/users", headers=bearer(ada["access_token"]), timeout=10
    )
    assert users.status_code == 200, users.text

    demoted = requests.put(
        f"{front.url}/api/v1/users/{ada['id']}",
        json={"is_superuser": False},
        headers=bearer(root["access_token"]),
        timeout=10,
    )
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["is_superuser"] is False

    # The revocation is published before the PUT answers; no waiting is needed.
    refused = requests.get(f"{front.url}{ORDERS}", headers=bearer(ada["access_token"]), timeout=10)
    assert refused.status_code == 401, refused.text
    assert "revoked" in refused.headers["WWW-Authenticate"]  # refused by the gateway itself
    me = requests.get(
        f"{front.url}/api/v1/auth/me", headers=bearer(ada["access_token"]), timeout=10
    )
    assert me.status_code == 401, me.text

    fresh = log_in(front, ada["email"])
    assert jwt.get_unverified_claims(fresh)["role"] == "user"
    assert roles_seen_upstream(front, fresh) == (200, "user")
    forbidden = requests.get(f"{front.url}/api/v1/users", headers=bearer(fresh), timeout=10)
    assert forbidden.status_code == 403, forbidden.text
    # The admin who demoted ada keeps working.
    assert roles_seen_upstream(front, root["access_token"]) == (200, "admin")


def forge(auth_root: Path, token: str, **changes: Any) -> str:
    """Re-sign a real token's claims, changed, with the auth service's own key."""
    pem = (auth_root / "keys" / "jwt-rs256-private.pem").read_bytes()
    header = jwt.get_unverified_header(token)
    claims = {**jwt.get_unverified_claims(token), **changes, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": header["kid"]})


@pytest.mark.parametrize(
    ("aud", "status"),
    [
        (["billing-api", "authgate-api"], 200),
        (["billing-api"], 401),
        ([], 401),
    ],
)
def test_audience_arrays_in_both_services(
    front: Gateway, auth_url: str, auth_root: Path, aud: list[str], status: int
) -> None:
    ada = sign_up(front, auth_root)
    token = forge(auth_root, ada["access_token"], aud=aud)
    # Through the gateway (it verifies first), and straight at the auth service.
    for base in (front.url, auth_url):
        me = requests.get(f"{base}/api/v1/auth/me", headers=bearer(token), timeout=10)
        assert me.status_code == status, (base, me.text)
        if status == 200:
            assert me.json()["id"] == ada["id"]
        else:
            assert me.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert roles_seen_upstream(front, token)[0] == status
