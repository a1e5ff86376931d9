"""Rehash on login: another bcrypt cost, or a hash imported from the monolith, is replaced
by our bcrypt at BCRYPT_ROUNDS in the login's own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import argon2
import bcrypt
import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, set_user_flags
from authcheck import assert_problem, execute, user_row

from auth_service.db.models import User

ROUNDS = 4  # the test settings' BCRYPT_ROUNDS


def bcrypt_at(rounds: int, prefix: bytes = b"2b") -> Callable[[str], str]:
    def make(password: str) -> str:
        salt = bcrypt.gensalt(rounds=rounds, prefix=prefix)
        return bcrypt.hashpw(password.encode(), salt).decode()

    return make


def argon2id(password: str) -> str:
    """What full-stack-fastapi-template stores (pwdlib's Argon2Hasher: argon2-cffi defaults)."""
    return argon2.PasswordHasher().hash(password)


STALE = {
    "bcrypt-other-cost": (bcrypt_at(5), "$2b$05$"),
    "bcrypt-2a-import": (bcrypt_at(ROUNDS, b"2a"), f"$2a${ROUNDS:02d}$"),
    "bcrypt-2a-import-cost-10": (bcrypt_at(10, b"2a"), "$2a$10$"),
    "argon2id-import": (argon2id, "$argon2id$"),
}


def store_hash(database_url: str, user_id: str, hashed: str) -> None:
    execute(
        database_url,
        sqlalchemy.update(User).where(User.id == uuid.UUID(user_id)).values(hashed_password=hashed),
    )


@pytest.mark.parametrize("kind", sorted(STALE))
def test_login_replaces_a_stale_hash_with_our_bcrypt(
    api: Api, database_url: str, kind: str
) -> None:
    make, prefix = STALE[kind]
    ada = api.register("ada@example.com").json
    store_hash(database_url, ada["id"], make(PASSWORD))
    before = user_row(database_url, "ada@example.com")
    assert before.hashed_password.startswith(prefix)

    # A wrong password changes nothing.
    assert_problem(api.login("ada@example.com", "not the password"), 401, "invalid-credentials")
    assert user_row(database_url, "ada@example.com").hashed_password == before.hashed_password

    assert api.login("ada@example.com").status_code == 200
    after = user_row(database_url, "ada@example.com")
    assert after.hashed_password.startswith(f"$2b${ROUNDS:02d}$")
    assert bcrypt.checkpw(PASSWORD.encode(), after.hashed_password.encode())
    assert after.updated_at == before.updated_at  # not a profile change

    # The old password still works, a wrong one still fails, and nothing churns.
    assert api.login("ada@example.com").status_code == 200
    assert user_row(database_url, "ada@example.com").hashed_password == after.hashed_password
    assert_problem(api.login("ada@example.com", "not the password"), 401, "invalid-credentials")


def test_current_hash_is_left_alone(api: Api, database_url: str) -> None:
    api.register("ada@example.com")
    before = user_row(database_url, "ada@example.com").hashed_password
    assert before.startswith(f"$2b${ROUNDS:02d}$")
    assert api.login("ada@example.com").status_code == 200
    assert user_row(database_url, "ada@example.com").hashed_password == before


def test_inactive_user_keeps_the_imported_hash(api: Api, database_url: str) -> None:
    ada = api.register("ada@example.com").json
    imported = argon2id(PASSWORD)
    store_hash(database_url, ada["id"], imported)
    set_user_flags(database_url, ada["id"], is_active=False)
    assert_problem(api.login("ada@example.com"), 403, "inactive-user")
    assert user_row(database_url, "ada@example.com").hashed_password == imported


def test_imported_argon2id_of_a_password_over_72_bytes_still_signs_in(
    api: Api, database_url: str
) -> None:
    # bcrypt cannot hold it, so the hash stays argon2id rather than locking the user out.
    long_password = "long passphrase " * 6  # 96 bytes
    ada = api.register("ada@example.com").json
    imported = argon2id(long_password)
    store_hash(database_url, ada["id"], imported)
    assert api.login("ada@example.com", long_password).status_code == 200
    assert user_row(database_url, "ada@example.com").hashed_password == imported
    assert_problem(api.login("ada@example.com", long_password[:72]), 401, "invalid-credentials")


def test_unknown_user_and_imported_user_get_the_same_failure(api: Api, database_url: str) -> None:
    ada = api.register("ada@example.com").json
    store_hash(database_url, ada["id"], argon2id(PASSWORD))
    wrong = api.login("ada@example.com", "not the password")
    unknown = api.login("nobody@example.com", "not the password")
    for result in (wrong, unknown):
        assert_problem(result, 401, "invalid-credentials")
    assert {k: v for k, v in wrong.json.items() if k != "request_id"} == {
        k: v for k, v in unknown.json.items() if k != "request_id"
    }
