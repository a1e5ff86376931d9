"""Email addresses: one syntax check and one normal form on every path that takes one."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, bearer
from authcheck import assert_problem, execute, rows, user_row

from auth_service.db.models import PasswordResetToken, Session, User

USERS = "/api/v1/users"
RESET = "/api/v1/auth/password-reset"

# Each passes the spec's `format: email` (which only asks for an "@") and is still no address.
NOT_ADDRESSES = [
    "a@exa mple.com",
    "a b@example.com",
    "ada@example..com",
    "ada@-example.com",
    "ada@example.com.",
    "@example.com",
    "ada@",
    "ada@localhost",
    "ada@@example.com",
    "ada@exa\tmple.com",
]
IDN_FORMS = ["ada@bücher.example", "ADA@BÜCHER.example", "ada@xn--bcher-kva.example"]
IDN_STORED = "ada@bücher.example"


def user_count(database_url: str) -> int:
    return int(rows(database_url, sqlalchemy.text("SELECT count(*) FROM users"))[0][0])


def assert_invalid_email(result, field: str = "email") -> None:
    """The 422 of any other schema violation, naming the field and never echoing the input."""
    body = assert_problem(result, 422, "validation-error", fields=[field])
    assert body["errors"] == [
        {"field": field, "code": "format", "message": "must be a valid idn-email"}
    ]
    assert body["title"] == "Request validation failed"


@pytest.mark.parametrize("address", NOT_ADDRESSES)
def test_register_refuses_what_is_not_an_address(api: Api, database_url: str, address: str) -> None:
    result = api.register(address)
    assert_invalid_email(result)
    assert address not in result.text
    assert user_count(database_url) == 0


def test_register_stores_the_idna_normal_form(api: Api, database_url: str) -> None:
    created = api.register(" ADA@xn--BCHER-kva.example ")
    assert created.status_code == 201, created.text
    assert created.json["email"] == IDN_STORED
    assert user_row(database_url, IDN_STORED) is not None
    for variant in IDN_FORMS:
        assert_problem(api.register(variant), 409, "email-taken")
    assert user_count(database_url) == 1


@pytest.mark.parametrize("variant", IDN_FORMS)
def test_login_finds_the_account_under_every_form_of_its_domain(api: Api, variant: str) -> None:
    assert api.register("ada@BÜCHER.example").status_code == 201
    result = api.login(variant)
    assert result.status_code == 200, result.text


def test_login_with_a_non_address_answers_like_an_unknown_email(
    api: Api, database_url: str
) -> None:
    # SECURITY: no 422 oracle and no different answer: the syntax check at sign-in only
    # changes which row is looked up, never the response.
    api.register("ada@example.com")
    unknown = api.login("nobody@example.com")
    for address in ("a@exa mple.com", "ada@example..com", "ada@localhost"):
        result = api.login(address)
        assert_problem(result, 401, "invalid-credentials")
        assert result.headers["www-authenticate"] == "Bearer"
        assert {k: v for k, v in result.json.items() if k != "request_id"} == {
            k: v for k, v in unknown.json.items() if k != "request_id"
        }
    assert rows(database_url, sqlalchemy.select(Session.id)) == []


def test_an_account_stored_before_the_check_still_signs_in(api: Api, database_url: str) -> None:
    # An address the old normaliser let in (trimmed, lower-cased, no syntax check).
    ada = api.user("ada@example.com")
    execute(
        database_url,
        sqlalchemy.update(User)
        .where(User.id == uuid.UUID(ada["id"]))
        .values(email="ada@exa mple.com"),
    )
    result = api.login(" ADA@exa mple.com")
    assert result.status_code == 200, result.text
    assert_problem(api.login("ada@exa mple.com", "wrong password"), 401, "invalid-credentials")


def test_admin_create_validates_and_normalises(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    headers = bearer(admin["access_token"])
    bad = api.client.simulate_post(
        USERS, json={"email": "root@exa mple.com", "password": PASSWORD}, headers=headers
    )
    assert_invalid_email(bad)
    assert user_count(database_url) == 1
    created = api.client.simulate_post(
        USERS, json={"email": "Root@XN--BCHER-KVA.example", "password": PASSWORD}, headers=headers
    )
    assert created.status_code == 201, created.text
    assert created.json["email"] == "root@bücher.example"


def test_update_validates_and_normalises(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    url, headers = f"{USERS}/{ada['id']}", bearer(ada["access_token"])
    bad = api.client.simulate_put(url, json={"email": "ada@exa mple.com"}, headers=headers)
    assert_invalid_email(bad)
    assert user_row(database_url, "ada@example.com") is not None
    moved = api.client.simulate_put(
        url, json={"email": "Ada@Xn--Bcher-Kva.Example"}, headers=headers
    )
    assert moved.status_code == 200, moved.text
    assert moved.json["email"] == IDN_STORED
    assert api.login("ada@BÜCHER.example").status_code == 200


def test_password_reset_accepts_any_form_and_always_answers_202(
    api: Api, database_url: str
) -> None:
    ada = api.register(IDN_STORED).json
    for address in ("a@exa mple.com", "ada@localhost"):
        result = api.client.simulate_post(RESET, json={"email": address})
        assert result.status_code == 202, result.text
    result = api.client.simulate_post(RESET, json={"email": "ADA@xn--bcher-kva.example"})
    assert result.status_code == 202, result.text
    # The punycode form found the account: its reset token exists (polled, in case the
    # token is written off the request path).
    deadline = time.monotonic() + 10
    query = sqlalchemy.select(PasswordResetToken.user_id)
    while not (found := rows(database_url, query)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [str(row.user_id) for row in found] == [ada["id"]]
