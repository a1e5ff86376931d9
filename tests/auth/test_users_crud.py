"""The users API: list, create, get, update, delete, with the self/admin rules."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy
from auth_api import Api, bearer
from authcheck import (
    assert_problem,
    assert_unauthorized_token,
    live_sessions,
    rows,
    user_row,
)

from auth_service.db.models import RefreshToken, Session

USERS = "/api/v1/users"
ME = "/api/v1/auth/me"


def user_url(user_id: str) -> str:
    return f"{USERS}/{user_id}"


# --- list -------------------------------------------------------------------------------


def test_list_users_pages_with_total(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    for n in range(4):
        assert api.register(f"user{n}@example.com").status_code == 201
    headers = bearer(admin["access_token"])
    first = api.client.simulate_get(USERS, params={"offset": 0, "limit": 2}, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json["total"] == 5
    assert (first.json["offset"], first.json["limit"]) == (0, 2)
    assert [u["email"] for u in first.json["items"]] == ["admin@example.com", "user0@example.com"]
    rest = api.client.simulate_get(USERS, params={"offset": 2, "limit": 100}, headers=headers)
    assert [u["email"] for u in rest.json["items"]] == [f"user{n}@example.com" for n in (1, 2, 3)]
    defaults = api.client.simulate_get(USERS, headers=headers)
    assert (defaults.json["offset"], defaults.json["limit"]) == (0, 50)
    assert len(defaults.json["items"]) == 5
    assert "hashed_password" not in defaults.text


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 101}, "limit"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset")],
)
def test_list_users_out_of_range_is_422(
    api: Api, database_url: str, params: dict, field: str
) -> None:
    admin = api.admin(database_url)
    result = api.client.simulate_get(USERS, params=params, headers=bearer(admin["access_token"]))
    assert_problem(result, 422, "validation-error", [field])


def test_list_users_is_admin_only(api: Api) -> None:
    user = api.user("ada@example.com")
    result = api.client.simulate_get(USERS, headers=bearer(user["access_token"]))
    assert_problem(result, 403, "forbidden")
    anonymous = api.client.simulate_get(USERS)
    assert_problem(anonymous, 401, "missing-token")
    assert anonymous.headers["www-authenticate"] == "Bearer"


# --- create -----------------------------------------------------------------------------


def test_admin_creates_user_with_flags(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    result = api.client.simulate_post(
        USERS,
        json={
            "email": " Root@Example.com",
            "password": "a long admin passphrase",
            "full_name": "Root",
            "is_superuser": True,
            "is_active": False,
        },
        headers=bearer(admin["access_token"]),
    )
    assert result.status_code == 201, result.text
    assert result.headers["location"] == user_url(result.json["id"])
    assert result.json["email"] == "root@example.com"
    assert result.json["is_superuser"] is True
    assert result.json["is_active"] is False
    row = user_row(database_url, "root@example.com")
    assert (row.is_superuser, row.is_active, row.full_name) == (True, False, "Root")


def test_create_user_conflict_and_validation(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    headers = bearer(admin["access_token"])
    taken = api.client.simulate_post(
        USERS, json={"email": "ADMIN@example.com", "password": "long enough"}, headers=headers
    )
    assert_problem(taken, 409, "email-taken")
    missing = api.client.simulate_post(USERS, json={"email": "x@example.com"}, headers=headers)
    assert_problem(missing, 422, "validation-error", ["password"])
    extra = api.client.simulate_post(
        USERS,
        json={"email": "x@example.com", "password": "long enough", "role": "admin"},
        headers=headers,
    )
    assert_problem(extra, 422, "validation-error", ["role"])
    assert user_row(database_url, "x@example.com") is None


def test_create_user_is_admin_only(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    result = api.client.simulate_post(
        USERS,
        json={"email": "evil@example.com", "password": "long enough", "is_superuser": True},
        headers=bearer(user["access_token"]),
    )
    assert_problem(result, 403, "forbidden")
    assert user_row(database_url, "evil@example.com") is None


# --- get --------------------------------------------------------------------------------


def test_get_user_self_other_and_unknown(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    bob = api.user("bob@example.com")
    own = api.client.simulate_get(user_url(ada["id"]), headers=bearer(ada["access_token"]))
    assert own.status_code == 200
    assert own.json["email"] == "ada@example.com"
    other = api.client.simulate_get(user_url(bob["id"]), headers=bearer(ada["access_token"]))
    assert_problem(other, 403, "forbidden")
    assert "bob@example.com" not in other.text
    # A non-admin cannot tell unknown ids from others' ids.
    unknown = str(uuid.uuid4())
    assert_problem(
        api.client.simulate_get(user_url(unknown), headers=bearer(ada["access_token"])), 403
    )
    admin = api.admin(database_url)
    seen = api.client.simulate_get(user_url(bob["id"]), headers=bearer(admin["access_token"]))
    assert seen.status_code == 200
    assert seen.json["email"] == "bob@example.com"
    missing = api.client.simulate_get(user_url(unknown), headers=bearer(admin["access_token"]))
    assert_problem(missing, 404, "user-not-found")


# --- update -----------------------------------------------------------------------------


def test_update_own_profile(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    headers = bearer(ada["access_token"])
    result = api.client.simulate_put(
        user_url(ada["id"]), json={"full_name": "Ada King"}, headers=headers
    )
    assert result.status_code == 200, result.text
    assert result.json["full_name"] == "Ada King"
    assert result.json["updated_at"] >= ada["updated_at"]
    assert user_row(database_url, "ada@example.com").full_name == "Ada King"
    moved = api.client.simulate_put(
        user_url(ada["id"]), json={"email": " Ada.King@Example.com"}, headers=headers
    )
    assert moved.status_code == 200
    assert moved.json["email"] == "ada.king@example.com"
    assert user_row(database_url, "ada@example.com") is None
    cleared = api.client.simulate_put(
        user_url(ada["id"]), json={"full_name": None}, headers=headers
    )
    assert cleared.json["full_name"] is None
    # An empty object changes nothing.
    same = api.client.simulate_put(user_url(ada["id"]), json={}, headers=headers)
    assert same.status_code == 200
    assert same.json["email"] == "ada.king@example.com"


@pytest.mark.parametrize("flag", ["is_active", "is_superuser"])
def test_non_admin_cannot_set_flags(api: Api, database_url: str, flag: str) -> None:
    ada = api.user("ada@example.com")
    value = flag == "is_superuser"
    result = api.client.simulate_put(
        user_url(ada["id"]), json={flag: value}, headers=bearer(ada["access_token"])
    )
    assert_problem(result, 403, "forbidden")
    row = user_row(database_url, "ada@example.com")
    assert (row.is_active, row.is_superuser) == (True, False)


def test_non_admin_cannot_update_others(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    bob = api.user("bob@example.com")
    result = api.client.simulate_put(
        user_url(bob["id"]), json={"full_name": "pwned"}, headers=bearer(ada["access_token"])
    )
    assert_problem(result, 403, "forbidden")
    assert user_row(database_url, "bob@example.com").full_name is None


def test_update_email_conflict_is_409(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    api.user("bob@example.com")
    result = api.client.simulate_put(
        user_url(ada["id"]), json={"email": "BOB@example.com"}, headers=bearer(ada["access_token"])
    )
    assert_problem(result, 409, "email-taken")
    assert user_row(database_url, "ada@example.com") is not None


def test_update_unknown_user_as_admin_is_404(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    result = api.client.simulate_put(
        user_url(str(uuid.uuid4())),
        json={"full_name": "x"},
        headers=bearer(admin["access_token"]),
    )
    assert_problem(result, 404, "user-not-found")


def test_admin_deactivation_revokes_sessions(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    ada = api.user("ada@example.com")
    second = api.login("ada@example.com").json
    assert len(live_sessions(database_url, ada["id"])) == 2
    result = api.client.simulate_put(
        user_url(ada["id"]), json={"is_active": False}, headers=bearer(admin["access_token"])
    )
    assert result.status_code == 200, result.text
    assert result.json["is_active"] is False
    assert live_sessions(database_url, ada["id"]) == []
    for token in (ada["access_token"], second["access_token"]):
        assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(token)))
    # The admin's own session is untouched.
    assert api.client.simulate_get(ME, headers=bearer(admin["access_token"])).status_code == 200


def test_admin_demotion_revokes_sessions(api: Api, database_url: str) -> None:
    # Access tokens carry the role: a demoted admin's would say "admin" until they expire.
    root = api.admin(database_url)
    ada = api.admin(database_url, "ada@example.com")
    result = api.client.simulate_put(
        user_url(ada["id"]), json={"is_superuser": False}, headers=bearer(root["access_token"])
    )
    assert result.status_code == 200, result.text
    assert live_sessions(database_url, ada["id"]) == []
    assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(ada["access_token"])))
    again = api.login("ada@example.com")
    assert again.status_code == 200, again.text
    users = api.client.simulate_get(USERS, headers=bearer(again.json["access_token"]))
    assert_problem(users, 403, "forbidden")
    # Neither the admin's own session nor an unrelated update of ada is affected.
    assert len(live_sessions(database_url, root["id"])) == 1
    renamed = api.client.simulate_put(
        user_url(ada["id"]), json={"full_name": "Ada"}, headers=bearer(root["access_token"])
    )
    assert renamed.status_code == 200, renamed.text
    assert len(live_sessions(database_url, ada["id"])) == 1


def test_admin_promotes_user(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    ada = api.user("ada@example.com")
    result = api.client.simulate_put(
        user_url(ada["id"]), json={"is_superuser": True}, headers=bearer(admin["access_token"])
    )
    assert result.status_code == 200
    assert user_row(database_url, "ada@example.com").is_superuser is True


def test_last_superuser_cannot_demote_or_deactivate_self(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    headers = bearer(admin["access_token"])
    for change in ({"is_superuser": False}, {"is_active": False}):
        result = api.client.simulate_put(user_url(admin["id"]), json=change, headers=headers)
        assert_problem(result, 409, "last-superuser")
    row = user_row(database_url, "admin@example.com")
    assert (row.is_superuser, row.is_active) == (True, True)
    # With a second admin, demoting oneself is allowed.
    other = api.admin(database_url, "root@example.com")
    assert other["is_superuser"] is False  # registered as a user, promoted in the database
    demoted = api.client.simulate_put(
        user_url(admin["id"]), json={"is_superuser": False}, headers=headers
    )
    assert demoted.status_code == 200, demoted.text
    assert user_row(database_url, "admin@example.com").is_superuser is False


# --- delete -----------------------------------------------------------------------------


def test_admin_deletes_user_and_their_sessions(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    ada = api.user("ada@example.com")
    result = api.client.simulate_delete(user_url(ada["id"]), headers=bearer(admin["access_token"]))
    assert result.status_code == 204
    assert result.text == ""
    assert user_row(database_url, "ada@example.com") is None
    uid = uuid.UUID(ada["id"])
    assert rows(database_url, sqlalchemy.select(Session.id).where(Session.user_id == uid)) == []
    assert (
        rows(database_url, sqlalchemy.select(RefreshToken.id).where(RefreshToken.user_id == uid))
        == []
    )
    assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(ada["access_token"])))
    again = api.client.simulate_delete(user_url(ada["id"]), headers=bearer(admin["access_token"]))
    assert_problem(again, 404, "user-not-found")


def test_delete_is_admin_only(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    bob = api.user("bob@example.com")
    for target in (bob["id"], ada["id"]):
        result = api.client.simulate_delete(user_url(target), headers=bearer(ada["access_token"]))
        assert_problem(result, 403, "forbidden")
    assert user_row(database_url, "bob@example.com") is not None
    assert user_row(database_url, "ada@example.com") is not None


def test_last_superuser_cannot_be_deleted(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    result = api.client.simulate_delete(
        user_url(admin["id"]), headers=bearer(admin["access_token"])
    )
    assert_problem(result, 409, "last-superuser")
    assert user_row(database_url, "admin@example.com") is not None
    assert api.client.simulate_get(ME, headers=bearer(admin["access_token"])).status_code == 200
