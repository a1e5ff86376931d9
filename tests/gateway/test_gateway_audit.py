"""The audit trail from the outside: the real gateway (its default routes) in front of the
real auth service under gunicorn.

The auth service trusts the gateway (TRUSTED_PROXIES=127.0.0.1/32), so an event records
the address the gateway saw; the client connects from another loopback address to tell
it apart from the gateway's own.
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
from gateway_support import Gateway, LoopbackClient, gateway_before_auth

from auth_service.db.models import AuditEvent, User

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
WRONG_PASSWORD = "a wrong guess 123"


@pytest.fixture(scope="module")
def auth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth-audit")


@pytest.fixture(scope="module")
def front(auth_root: Path) -> Iterator[Gateway]:
    """The gateway with its default routes (no GATEWAY_ROUTES) before the auth service."""
    with gateway_before_auth(auth_root) as gateway:
        yield gateway


class Client(LoopbackClient):
    """A loopback client that logs in and makes accounts."""

    def login(self, email: str, password: str = PASSWORD) -> requests.Response:
        return self.call("POST", "/auth/login", json={"email": email, "password": password})

    def account(self) -> tuple[str, dict[str, Any]]:
        """A new user, logged in: its email and token pair."""
        email = f"audit-{uuid.uuid4().hex[:12]}@example.com"
        made = self.call("POST", "/auth/register", json={"email": email, "password": PASSWORD})
        assert made.status_code == 201, made.text
        tokens = self.login(email)
        assert tokens.status_code == 200, tokens.text
        return email, tokens.json()


def database(auth_root: Path) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(f"sqlite:///{auth_root / 'auth.db'}")


def test_events_carry_the_real_client_through_the_gateway(front: Gateway, auth_root: Path) -> None:
    laptop = Client(front, "127.0.0.4", "audit-laptop/1.0")
    email, tokens = laptop.account()
    assert laptop.login(email, WRONG_PASSWORD).status_code == 401

    mine = laptop.call("GET", "/auth/events", tokens["access_token"])
    assert mine.status_code == 200, mine.text
    assert mine.headers["Cache-Control"] == "no-store"
    items = mine.json()["items"]
    assert [i["type"] for i in items] == ["login.failed", "login.succeeded", "user.created"]
    for item in items:
        assert item["client_address"] == "127.0.0.4", item  # not the gateway's 127.0.0.1
        assert item["user_agent"] == "audit-laptop/1.0"
    assert items[0]["details"] == {"reason": "wrong_password"}

    # An ordinary user may not read the whole trail (the gateway routes it by default).
    refused = laptop.call("GET", "/audit-events", tokens["access_token"])
    assert refused.status_code == 403, refused.text

    admin_client = Client(front, "127.0.0.5", "audit-admin/1.0")
    admin_email, _ = admin_client.account()
    engine = database(auth_root)
    try:
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.update(User).where(User.email == admin_email).values(is_superuser=True)
            )
        admin_token = admin_client.login(admin_email).json()["access_token"]
        user_id = items[0]["user_id"]
        trail = admin_client.http.get(
            f"{admin_client.base}/audit-events",
            params=[("user_id", user_id), ("type", "login.failed"), ("type", "user.created")],
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=30,
        )
        assert trail.status_code == 200, trail.text
        assert [i["type"] for i in trail.json()["items"]] == ["login.failed", "user.created"]
        assert trail.json()["next_cursor"] is None
        bad = admin_client.call("GET", "/audit-events?cursor=not-a-cursor", admin_token)
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == "cursor"

        # SECURITY: no stored event holds the passwords or tokens used.
        with engine.connect() as connection:
            stored = connection.execute(sqlalchemy.select(AuditEvent.__table__)).all()
        text = json.dumps([[str(value) for value in row] for row in stored])
        for secret in (PASSWORD, WRONG_PASSWORD, tokens["access_token"], tokens["refresh_token"]):
            assert secret not in text
    finally:
        engine.dispose()
