"""Readiness and a lost database: fast 503 problems, never a hang or a 500."""

from __future__ import annotations

import time

import pytest
from auth_api import Api
from authcheck import assert_problem
from falcon import testing

UNREACHABLE_DB = "postgresql+psycopg2://postgres@127.0.0.1:1/nope"


def test_readyz_ready_with_database(client: testing.TestClient) -> None:
    result = client.simulate_get("/readyz")
    assert result.status_code == 200, result.text
    assert result.json == {"status": "ready", "checks": {"database": "ok", "redis": "disabled"}}


def test_readyz_checks_redis_when_configured(make_client, redis_url: str) -> None:
    result = make_client(redis_url=redis_url).simulate_get("/readyz")
    assert result.status_code == 200, result.text
    assert result.json["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_503_when_database_unreachable(make_client) -> None:
    client = make_client(database_url=UNREACHABLE_DB)
    started = time.monotonic()
    result = client.simulate_get("/readyz")
    assert time.monotonic() - started < 10
    body = assert_problem(result, 503, "not-ready")
    assert "database" in body["detail"]
    assert "nope" not in body["detail"] and "5432" not in result.text
    assert int(result.headers["retry-after"]) > 0
    # Liveness does not depend on the database.
    assert client.simulate_get("/healthz").status_code == 200


def test_readyz_503_when_redis_unreachable(make_client) -> None:
    result = make_client(redis_url="redis://127.0.0.1:1/0").simulate_get("/readyz")
    body = assert_problem(result, 503, "not-ready")
    assert "redis" in body["detail"]
    assert "database" not in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/auth/login", {"email": "ada@example.com", "password": "whatever1"}),
        ("POST", "/api/v1/auth/register", {"email": "ada@example.com", "password": "whatever1"}),
        ("POST", "/api/v1/auth/refresh", {"refresh_token": "abc"}),
        ("POST", "/api/v1/auth/password-reset", {"email": "ada@example.com"}),
    ],
)
def test_operations_answer_503_when_database_unreachable(
    make_client, method: str, path: str, body: dict
) -> None:
    client = make_client(database_url=UNREACHABLE_DB)
    started = time.monotonic()
    result = client.simulate_request(method, path, json=body)
    assert time.monotonic() - started < 10
    assert_problem(result, 503, "database-unavailable")
    assert int(result.headers["retry-after"]) > 0
    assert "psycopg2" not in result.text and "127.0.0.1" not in result.text


def test_me_with_valid_token_answers_503_when_database_is_lost(api: Api, make_client) -> None:
    # A token issued by a working app (same dev key), presented to an app whose database is gone.
    token = api.user("ada@example.com")["access_token"]
    lost = make_client(database_url=UNREACHABLE_DB)
    result = lost.simulate_get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(result, 503, "database-unavailable")
