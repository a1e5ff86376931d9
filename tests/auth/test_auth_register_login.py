"""Registration and login: success, every error path, throttling, and what the database keeps."""

from __future__ import annotations

import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, set_user_flags
from authcheck import (
    assert_problem,
    refresh_row,
    rows,
    session_row,
    user_row,
)
from falcon import testing
from jose import jwt

from auth_service.db.models import LoginThrottle, RefreshToken, Session
from auth_service.services.throttle import account_key, address_key, ceiling_key

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"


# --- register ---------------------------------------------------------------------------


def test_register_creates_user_with_normalised_email(api: Api, database_url: str) -> None:
    result = api.register("  Ada.Lovelace@Example.COM ", full_name="Ada")
    assert result.status_code == 201, result.text
    body = result.json
    assert body["email"] == "ada.lovelace@example.com"
    assert body["full_name"] == "Ada"
    assert body["is_active"] is True
    assert body["is_superuser"] is False
    assert body["mfa_enabled"] is False
    assert body["email_verified"] is False  # until the mailed link is used
    assert set(body) == {
        "id",
        "email",
        "full_name",
        "is_active",
        "is_superuser",
        "mfa_enabled",
        "email_verified",
        "created_at",
        "updated_at",
    }
    assert result.headers["location"] == f"/api/v1/users/{body['id']}"
    row = user_row(database_url, "ada.lovelace@example.com")
    assert row is not None
    assert str(row.id) == body["id"]
    # The password is stored as a bcrypt hash, never in clear.
    assert row.hashed_password.startswith("$2")
    assert PASSWORD not in row.hashed_password


def test_register_taken_email_in_other_case_is_409(api: Api, database_url: str) -> None:
    assert api.register("grace@example.com").status_code == 201
    result = api.register(" GRACE@Example.com")
    assert_problem(result, 409, "email-taken")
    count = rows(
        database_url,
        sqlalchemy.text("SELECT count(*) FROM users WHERE email = 'grace@example.com'"),
    )
    assert count[0][0] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": PASSWORD}, "email"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "is_superuser": True}, "is_superuser"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
    ],
)
def test_register_invalid_body_is_422_naming_the_field(
    client: testing.TestClient, database_url: str, body: dict, field: str
) -> None:
    result = client.simulate_post(REGISTER, json=body)
    assert_problem(result, 422, "validation-error", fields=[field])
    assert rows(database_url, sqlalchemy.text("SELECT count(*) FROM users"))[0][0] == 0


def test_register_disabled_is_403(make_client, database_url: str) -> None:
    closed = Api(make_client(allow_registration=False))
    result = closed.register("ada@example.com")
    assert_problem(result, 403, "registration-disabled")
    assert user_row(database_url, "ada@example.com") is None


# --- login ------------------------------------------------------------------------------


def test_login_issues_token_pair_and_records_session(api: Api, database_url: str) -> None:
    user = api.register("Ada@Example.com").json
    result = api.login("ADA@example.com ", headers={"User-Agent": "pytest-agent/1"})
    assert result.status_code == 200, result.text
    assert result.headers["cache-control"] == "no-store"
    body = result.json
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    claims = jwt.get_unverified_claims(body["access_token"])
    assert claims["sub"] == user["id"]
    assert claims["role"] == "user"
    token = refresh_row(database_url, body["refresh_token"])
    assert str(token.user_id) == user["id"]
    assert token.used_at is None
    assert token.user_agent == "pytest-agent/1"
    # SECURITY: only the hash of the refresh token is stored.
    stored = rows(database_url, sqlalchemy.select(RefreshToken.__table__))
    assert all(body["refresh_token"] not in str(tuple(row)) for row in stored)
    session = session_row(database_url, token.session_id)
    assert str(session.id) == claims["sid"]
    assert session.revoked_at is None


def test_login_failures_answer_alike_for_unknown_email_and_wrong_password(
    api: Api, database_url: str
) -> None:
    api.register("ada@example.com")
    wrong = api.login("ada@example.com", "not the password")
    unknown = api.login("nobody@example.com")
    for result in (wrong, unknown):
        assert_problem(result, 401, "invalid-credentials")
    strip = ("request_id",)
    assert {k: v for k, v in wrong.json.items() if k not in strip} == {
        k: v for k, v in unknown.json.items() if k not in strip
    }
    assert rows(database_url, sqlalchemy.select(Session.__table__)) == []


def test_login_401_carries_a_bearer_challenge(api: Api) -> None:
    api.register("ada@example.com")
    result = api.login("ada@example.com", "not the password")
    assert_problem(result, 401, "invalid-credentials")
    assert result.headers["www-authenticate"] == "Bearer"


def test_login_inactive_is_403_only_with_correct_password(api: Api, database_url: str) -> None:
    user = api.register("ada@example.com").json
    set_user_flags(database_url, user["id"], is_active=False)
    assert_problem(api.login("ada@example.com"), 403, "inactive-user")
    # A wrong password must not reveal that the account exists but is inactive.
    assert_problem(api.login("ada@example.com", "wrong password"), 401, "invalid-credentials")
    assert rows(database_url, sqlalchemy.select(Session.__table__)) == []


@pytest.mark.parametrize("known", [True, False], ids=["known-email", "unknown-email"])
def test_login_throttled_after_max_failures(make_client, database_url: str, known: bool) -> None:
    api = Api(make_client(login_max_failures=3))
    if known:
        api.register("ada@example.com")
    for _ in range(3):
        assert_problem(api.login("Ada@example.com", "wrong password"), 401, "invalid-credentials")
    # Locked now: even the right password (or any password) is refused, with Retry-After.
    throttled = api.login("ada@example.com")
    assert_problem(throttled, 429, "login-throttled")
    assert 0 < int(throttled.headers["retry-after"]) <= 900
    # Two counters, both under the account's hash: this address's (locked) and the
    # ceiling across addresses (3 of 100, not locked). Hashes only, never the email or IP.
    throttles = {
        row.key_hash: row for row in rows(database_url, sqlalchemy.select(LoginThrottle.__table__))
    }
    pair, ceiling = address_key("ada@example.com", "127.0.0.1"), ceiling_key("ada@example.com")
    assert set(throttles) == {pair, ceiling}
    assert {row.account_hash for row in throttles.values()} == {account_key("ada@example.com")}
    assert throttles[pair].failures == 3
    assert throttles[pair].locked_until is not None
    assert throttles[ceiling].failures == 3
    assert throttles[ceiling].locked_until is None
    stored = " ".join(str(value) for row in throttles.values() for value in row)
    assert "ada" not in stored
    assert "127.0.0.1" not in stored
    assert rows(database_url, sqlalchemy.select(Session.__table__)) == []


def test_login_success_resets_the_address_throttle(make_client, database_url: str) -> None:
    api = Api(make_client(login_max_failures=3))
    api.register("ada@example.com")
    for _ in range(2):
        assert api.login("ada@example.com", "wrong password").status_code == 401
    assert api.login("ada@example.com").status_code == 200
    # This address's counter is gone; the ceiling keeps counting every address's failures,
    # or one good login would give a distributed attack a fresh budget.
    throttles = rows(database_url, sqlalchemy.select(LoginThrottle.__table__))
    assert [(row.key_hash, row.failures) for row in throttles] == [
        (ceiling_key("ada@example.com"), 2)
    ]
    # Two more failures are again below the limit of three.
    for _ in range(2):
        assert api.login("ada@example.com", "wrong password").status_code == 401
    assert api.login("ada@example.com").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com"}, "password"),
        ({"password": "x"}, "email"),
        ({"email": "a@example.com", "password": "x", "remember": True}, "remember"),
        ({"email": "a@example.com", "password": ""}, "password"),
    ],
)
def test_login_invalid_body_is_422(client: testing.TestClient, body: dict, field: str) -> None:
    assert_problem(client.simulate_post(LOGIN, json=body), 422, "validation-error", [field])
