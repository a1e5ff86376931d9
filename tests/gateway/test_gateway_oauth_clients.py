"""The OAuth client admin API from the outside: the real gateway (default routes) in front of
the real auth service, both under gunicorn, with an API scope configured on the auth service.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from gateway_support import Gateway, gateway_before_auth

from auth_service.db.models import OAuthClient, User

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
PROBLEMS = "https://authgate.dev/problems/"


@pytest.fixture(scope="module")
def auth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth-oauth-clients")


@pytest.fixture(scope="module")
def front(auth_root: Path, redis_url: str) -> Iterator[Gateway]:
    with gateway_before_auth(auth_root, redis_url, OAUTH_API_SCOPES="invoices:read") as gateway:
        yield gateway


def call(front: Gateway, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{front.url}/api/v1{path}", headers=headers, timeout=30, **kw)


def login_new_user(front: Gateway, auth_root: Path, *, admin: bool) -> str:
    email = f"oauth-{uuid.uuid4().hex[:12]}@example.com"
    made = call(front, "POST", "/auth/register", json={"email": email, "password": PASSWORD})
    assert made.status_code == 201, made.text
    if admin:
        with database(auth_root) as connection:
            connection.execute(
                sqlalchemy.update(User).where(User.email == email).values(is_superuser=True)
            )
    tokens = call(front, "POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["access_token"])


@contextmanager
def database(root: Path) -> Iterator[sqlalchemy.Connection]:
    """A connection to the auth service's SQLite database, in a transaction."""
    engine = sqlalchemy.create_engine(f"sqlite:///{root / 'auth.db'}")
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def test_admin_manages_a_client_through_the_gateway(front: Gateway, auth_root: Path) -> None:
    admin = login_new_user(front, auth_root, admin=True)
    user = login_new_user(front, auth_root, admin=False)
    body = {
        "name": "Invoices dashboard",
        "client_type": "confidential",
        "redirect_uris": ["https://dash.example.com/callback"],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes": ["openid", "invoices:read"],
    }

    assert call(front, "POST", "/oauth-clients", json=body).status_code == 401
    refused = call(front, "POST", "/oauth-clients", user, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"] == PROBLEMS + "forbidden"

    created = call(front, "POST", "/oauth-clients", admin, json=body)
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    client_id, secret = created.json()["client_id"], created.json()["client_secret"]
    assert created.headers["Location"] == f"/api/v1/oauth-clients/{client_id}"
    with database(auth_root) as connection:
        (row,) = connection.execute(
            sqlalchemy.select(OAuthClient.client_secret_hash, OAuthClient.scopes).where(
                OAuthClient.client_id == client_id
            )
        )
    assert row.client_secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert row.scopes == ["openid", "invoices:read"]

    read = call(front, "GET", f"/oauth-clients/{client_id}", admin)
    assert read.status_code == 200, read.text
    listed = call(front, "GET", "/oauth-clients", admin, params={"limit": 10})
    assert listed.status_code == 200 and listed.json()["total"] == 1
    assert [c["client_id"] for c in listed.json()["items"]] == [client_id]
    for answer in (read, listed):
        assert secret not in answer.text and row.client_secret_hash not in answer.text

    unknown_scope = call(
        front, "POST", "/oauth-clients", admin, json={**body, "scopes": ["payroll:read"]}
    )
    assert unknown_scope.status_code == 422, unknown_scope.text
    assert [e["field"] for e in unknown_scope.json()["errors"]] == ["scopes.0"]

    replacement = {k: v for k, v in body.items() if k != "client_type"}
    replaced = call(
        front, "PUT", f"/oauth-clients/{client_id}", admin, json={**replacement, "name": "Dash"}
    )
    assert replaced.status_code == 200 and replaced.json()["name"] == "Dash", replaced.text

    rotated = call(front, "POST", f"/oauth-clients/{client_id}/secret", admin)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["client_secret"] != secret

    deleted = call(front, "DELETE", f"/oauth-clients/{client_id}", admin)
    assert deleted.status_code == 204, deleted.text
    gone = call(front, "GET", f"/oauth-clients/{client_id}", admin)
    assert gone.status_code == 404 and gone.json()["type"] == PROBLEMS + "oauth-client-not-found"
