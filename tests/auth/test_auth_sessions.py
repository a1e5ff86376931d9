"""Refresh-token rotation and reuse detection, logout, and GET /auth/me with its bearer rules."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy
from auth_api import Api, bearer, set_user_flags
from authcheck import (
    ago,
    assert_problem,
    assert_unauthorized_token,
    execute,
    refresh_row,
    rows,
    session_row,
)
from falcon import testing

from auth_service.db.models import RefreshToken

REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"


def refresh(client: testing.TestClient, token: str) -> testing.Result:
    return client.simulate_post(REFRESH, json={"refresh_token": token})


def family(database_url: str, session_id) -> list:
    return rows(
        database_url,
        sqlalchemy.select(RefreshToken.__table__).where(RefreshToken.session_id == session_id),
    )


# --- refresh ----------------------------------------------------------------------------


def test_refresh_rotates_and_links_the_old_token(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    old = refresh_row(database_url, user["refresh_token"])
    result = refresh(api.client, user["refresh_token"])
    assert result.status_code == 200, result.text
    assert result.headers["cache-control"] == "no-store"
    pair = result.json
    assert pair["refresh_token"] != user["refresh_token"]
    assert pair["access_token"] != user["access_token"]
    new = refresh_row(database_url, pair["refresh_token"])
    used = refresh_row(database_url, user["refresh_token"])
    assert used.used_at is not None
    assert used.replaced_by_id == new.id
    assert new.session_id == old.session_id
    assert new.used_at is None
    assert len(family(database_url, old.session_id)) == 2
    me = api.client.simulate_get(ME, headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.json["id"] == user["id"]


def test_refresh_unknown_token_is_401_with_challenge(client: testing.TestClient) -> None:
    result = refresh(client, "no-such-token")
    assert_problem(result, 401, "invalid-refresh-token")
    assert result.headers["www-authenticate"] == "Bearer"


def test_refresh_expired_token_is_401(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    row = refresh_row(database_url, user["refresh_token"])
    execute(
        database_url,
        sqlalchemy.update(RefreshToken).where(RefreshToken.id == row.id).values(expires_at=ago(1)),
    )
    assert_problem(refresh(api.client, user["refresh_token"]), 401, "invalid-refresh-token")
    assert refresh_row(database_url, user["refresh_token"]).used_at is None
    assert len(family(database_url, row.session_id)) == 1


def test_refresh_reuse_after_grace_revokes_the_session(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    rotated = refresh(api.client, user["refresh_token"]).json
    old = refresh_row(database_url, user["refresh_token"])
    # Move the rotation out of the 10 s grace window.
    execute(
        database_url,
        sqlalchemy.update(RefreshToken).where(RefreshToken.id == old.id).values(used_at=ago(60)),
    )
    assert_problem(refresh(api.client, user["refresh_token"]), 401, "invalid-refresh-token")
    assert session_row(database_url, old.session_id).revoked_at is not None
    # Everything of that session is dead now: the newest refresh token and access token too.
    assert_problem(refresh(api.client, rotated["refresh_token"]), 401, "invalid-refresh-token")
    assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(rotated["access_token"])))
    assert len(family(database_url, old.session_id)) == 2


def test_refresh_reuse_within_grace_is_409_and_revokes_nothing(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    rotated = refresh(api.client, user["refresh_token"]).json
    again = refresh(api.client, user["refresh_token"])
    assert_problem(again, 409, "refresh-token-rotated")
    session_id = refresh_row(database_url, user["refresh_token"]).session_id
    assert session_row(database_url, session_id).revoked_at is None
    assert len(family(database_url, session_id)) == 2
    # The newer pair still works.
    assert api.client.simulate_get(ME, headers=bearer(rotated["access_token"])).status_code == 200
    assert refresh(api.client, rotated["refresh_token"]).status_code == 200


def test_refresh_strict_mode_treats_any_second_use_as_reuse(make_client, database_url: str) -> None:
    strict = make_client(refresh_reuse_grace_seconds=0)
    api = Api(strict)
    user = api.user("ada@example.com")
    rotated = refresh(strict, user["refresh_token"])
    assert rotated.status_code == 200
    assert_problem(refresh(strict, user["refresh_token"]), 401, "invalid-refresh-token")
    session_id = refresh_row(database_url, user["refresh_token"]).session_id
    assert session_row(database_url, session_id).revoked_at is not None
    assert_unauthorized_token(strict.simulate_get(ME, headers=bearer(rotated.json["access_token"])))


def test_strict_mode_refresh_used_later_than_now_is_reuse(make_client, database_url: str) -> None:
    strict = make_client(refresh_reuse_grace_seconds=0)
    user = Api(strict).user("ada@example.com")
    row = refresh_row(database_url, user["refresh_token"])
    # The state a racing loser sees: the winner stamped used_at after the loser read the clock.
    execute(
        database_url,
        sqlalchemy.update(RefreshToken).where(RefreshToken.id == row.id).values(used_at=ago(-0.5)),
    )
    assert_problem(refresh(strict, user["refresh_token"]), 401, "invalid-refresh-token")
    assert session_row(database_url, row.session_id).revoked_at is not None


def test_refresh_of_deactivated_user_is_401(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    set_user_flags(database_url, user["id"], is_active=False)
    assert_problem(refresh(api.client, user["refresh_token"]), 401, "invalid-refresh-token")
    assert refresh_row(database_url, user["refresh_token"]).used_at is None


# --- logout -----------------------------------------------------------------------------


def test_logout_revokes_the_session(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    other = api.login("ada@example.com").json
    result = api.client.simulate_post(LOGOUT, json={"refresh_token": user["refresh_token"]})
    assert result.status_code == 204
    assert result.text == ""
    session_id = refresh_row(database_url, user["refresh_token"]).session_id
    assert session_row(database_url, session_id).revoked_at is not None
    assert_unauthorized_token(
        api.client.simulate_get(ME, headers=bearer(user["access_token"])), "session-revoked"
    )
    assert_problem(refresh(api.client, user["refresh_token"]), 401, "invalid-refresh-token")
    # Only that session ended: the other login still works.
    assert api.client.simulate_get(ME, headers=bearer(other["access_token"])).status_code == 200


def test_logout_unknown_token_is_204(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    result = api.client.simulate_post(LOGOUT, json={"refresh_token": "never-issued"})
    assert result.status_code == 204
    session_id = refresh_row(database_url, user["refresh_token"]).session_id
    assert session_row(database_url, session_id).revoked_at is None
    # Twice is fine too (idempotent).
    body = {"refresh_token": user["refresh_token"]}
    assert api.client.simulate_post(LOGOUT, json=body).status_code == 204
    assert api.client.simulate_post(LOGOUT, json=body).status_code == 204


def test_logout_without_token_is_422(client: testing.TestClient) -> None:
    result = client.simulate_post(LOGOUT, json={})
    assert_problem(result, 422, "validation-error", ["refresh_token"])


# --- me ---------------------------------------------------------------------------------


def test_me_returns_the_user_without_secrets(api: Api) -> None:
    user = api.user("ada@example.com")
    result = api.client.simulate_get(ME, headers=bearer(user["access_token"]))
    assert result.status_code == 200
    assert result.json["email"] == "ada@example.com"
    assert "hashed_password" not in result.text
    assert "$2b$" not in result.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_me_bearer_scheme_is_case_insensitive(api: Api, scheme: str) -> None:
    user = api.user("ada@example.com")
    result = api.client.simulate_get(
        ME, headers={"Authorization": f"{scheme} {user['access_token']}"}
    )
    assert result.status_code == 200, result.text


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic YWRhOnNlY3JldA==", "Bearer", "Bearer    ", "Token abc"],
    ids=["absent", "empty", "basic", "scheme-only", "blank-token", "other-scheme"],
)
def test_me_without_bearer_token_is_401_with_challenge(
    client: testing.TestClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    result = client.simulate_get(ME, headers=headers)
    assert_problem(result, 401, "missing-token")
    assert result.headers["www-authenticate"] == "Bearer"


def test_me_with_basic_credentials_of_a_real_user_is_401(api: Api) -> None:
    api.user("ada@example.com")
    basic = base64.b64encode(b"ada@example.com:correct horse battery").decode()
    result = api.client.simulate_get(ME, headers={"Authorization": f"Basic {basic}"})
    assert_problem(result, 401)
    assert result.headers["www-authenticate"].startswith("Bearer")
