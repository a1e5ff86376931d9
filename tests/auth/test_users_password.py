"""PUT /users/me/password: the current session survives, every other one ends."""

from __future__ import annotations

import pytest
from auth_api import PASSWORD, Api, bearer
from authcheck import (
    assert_problem,
    assert_unauthorized_token,
    live_sessions,
    refresh_row,
    user_row,
)

CHANGE = "/api/v1/users/me/password"
ME = "/api/v1/auth/me"
NEW_PASSWORD = "an even longer passphrase"


def test_change_password_keeps_current_session_only(api: Api, database_url: str) -> None:
    current = api.user("ada@example.com")
    other = api.login("ada@example.com").json
    before = user_row(database_url, "ada@example.com").hashed_password
    result = api.client.simulate_put(
        CHANGE,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )
    assert result.status_code == 204, result.text
    assert result.text == ""
    after = user_row(database_url, "ada@example.com").hashed_password
    assert after != before
    assert NEW_PASSWORD not in after
    assert api.client.simulate_get(ME, headers=bearer(current["access_token"])).status_code == 200
    assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(other["access_token"])))
    live = live_sessions(database_url, current["id"])
    assert [row.id for row in live] == [
        refresh_row(database_url, current["refresh_token"]).session_id
    ]
    refreshed = api.client.simulate_post(
        "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert_problem(refreshed, 401, "invalid-refresh-token")
    assert_problem(api.login("ada@example.com"), 401, "invalid-credentials")
    assert api.login("ada@example.com", NEW_PASSWORD).status_code == 200


def test_change_password_wrong_current_is_400(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    before = user_row(database_url, "ada@example.com").hashed_password
    result = api.client.simulate_put(
        CHANGE,
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=bearer(user["access_token"]),
    )
    assert_problem(result, 400, "wrong-password", ["current_password"])
    assert user_row(database_url, "ada@example.com").hashed_password == before
    assert len(live_sessions(database_url, user["id"])) == 1


@pytest.mark.parametrize(
    ("new_password", "code"),
    [
        ("é" * 36 + "a", "password-too-long"),
        ("x" * 73, "validation-error"),
        ("short", "validation-error"),
    ],
    ids=["73-bytes-37-chars", "73-chars", "too-short"],
)
def test_change_password_invalid_new_is_422_naming_new_password(
    api: Api, database_url: str, new_password: str, code: str
) -> None:
    user = api.user("ada@example.com")
    before = user_row(database_url, "ada@example.com").hashed_password
    result = api.client.simulate_put(
        CHANGE,
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=bearer(user["access_token"]),
    )
    assert_problem(result, 422, code, ["new_password"])
    assert user_row(database_url, "ada@example.com").hashed_password == before


def test_change_password_needs_a_token(api: Api) -> None:
    result = api.client.simulate_put(
        CHANGE, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert_problem(result, 401, "missing-token")
