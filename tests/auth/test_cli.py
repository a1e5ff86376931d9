"""Operator commands as operators run them: `python -m auth_service.cli migrate|create-admin`."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import argon2
import bcrypt
import pytest
import sqlalchemy
from auth_api import Api
from authcheck import assert_problem, rows
from falcon import testing
from jose import jwt

from auth_service.app import create_app
from auth_service.db.models import OAuthClient, User
from auth_service.settings import DEFAULT_SPEC_PATH, Settings
from auth_service.spec import Contract

REPO = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "Admin-Passphrase-4d1c"
EXPECTED_TABLES = {
    "users",
    "sessions",
    "refresh_tokens",
    "password_reset_tokens",
    "login_throttles",
}


def run_cli(
    *args: str, env: dict[str, str], stdin: int = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "FIRST_SUPERUSER_", "BCRYPT_", "AUTHGATE_", "JWT_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "auth_service.cli", *args],
        cwd=REPO,
        env={**base, **env},
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "AUTHGATE_VAR_DIR": str(tmp_path / "var"),
        "BCRYPT_ROUNDS": "4",
    }


def tables(database_url: str) -> set[str]:
    engine = sqlalchemy.create_engine(database_url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def migrated_env(cli_env: dict[str, str]) -> dict[str, str]:
    done = run_cli("migrate", env=cli_env)
    assert done.returncode == 0, done.stderr
    return cli_env


def test_migrate_creates_the_schema(cli_env: dict[str, str]) -> None:
    assert not Path(cli_env["DATABASE_URL"].removeprefix("sqlite:///")).exists()
    done = run_cli("migrate", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "Migrating" in done.stdout
    assert "up to date" in done.stdout
    assert tables(cli_env["DATABASE_URL"]) >= EXPECTED_TABLES
    again = run_cli("migrate", env=cli_env)
    assert again.returncode == 0, again.stderr


def test_migrate_hides_the_database_password(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": "postgresql+psycopg2://user:S3cretDbPw@127.0.0.1:1/x"}
    done = run_cli("migrate", env=env)
    assert done.returncode != 0
    assert "S3cretDbPw" not in done.stdout + done.stderr


def test_create_admin_creates_a_superuser_once(
    migrated_env: dict[str, str], contract: Contract, tmp_path: Path
) -> None:
    env = {
        **migrated_env,
        "FIRST_SUPERUSER_EMAIL": " Root@Example.com ",
        "FIRST_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
    }
    done = run_cli("create-admin", env=env)
    assert done.returncode == 0, done.stderr
    assert "Created superuser root@example.com" in done.stdout
    assert ADMIN_PASSWORD not in done.stdout + done.stderr

    engine = sqlalchemy.create_engine(migrated_env["DATABASE_URL"])
    with engine.connect() as connection:
        found = connection.execute(
            sqlalchemy.text("SELECT email, is_superuser, is_active, hashed_password FROM users")
        ).all()
    engine.dispose()
    assert len(found) == 1
    email, is_superuser, is_active, hashed = found[0]
    assert (email, bool(is_superuser), bool(is_active)) == ("root@example.com", True, True)
    assert ADMIN_PASSWORD not in hashed

    again = run_cli("create-admin", env=env)
    assert again.returncode == 0, again.stderr
    assert "already exists" in again.stdout
    assert ADMIN_PASSWORD not in again.stdout + again.stderr
    assert f"Database: {migrated_env['DATABASE_URL']}" in again.stdout

    # No password at all (no TTY): an existing admin is reported before any prompt.
    no_password = {k: v for k, v in env.items() if k != "FIRST_SUPERUSER_PASSWORD"}
    exists = run_cli("create-admin", env=no_password)
    assert exists.returncode == 0, exists.stderr
    assert "already exists" in exists.stdout

    # The admin can log in and use the admin API.
    settings = Settings(
        database_url=migrated_env["DATABASE_URL"],
        var_dir=tmp_path / "var",
        spec_path=DEFAULT_SPEC_PATH,
        bcrypt_rounds=4,
    )
    client = testing.TestClient(create_app(settings, contract=contract))
    tokens = client.simulate_post(
        "/api/v1/auth/login", json={"email": "root@example.com", "password": ADMIN_PASSWORD}
    )
    assert tokens.status_code == 200, tokens.text
    listed = client.simulate_get(
        "/api/v1/users", headers={"Authorization": f"Bearer {tokens.json['access_token']}"}
    )
    assert listed.status_code == 200
    assert listed.json["total"] == 1


def test_create_admin_without_email_is_exit_2(migrated_env: dict[str, str]) -> None:
    env = {**migrated_env, "FIRST_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
    done = run_cli("create-admin", env=env)
    assert done.returncode == 2
    assert "FIRST_SUPERUSER_EMAIL" in done.stderr
    assert ADMIN_PASSWORD not in done.stdout + done.stderr


def test_create_admin_without_password_and_tty_is_exit_2(migrated_env: dict[str, str]) -> None:
    env = {**migrated_env, "FIRST_SUPERUSER_EMAIL": "root@example.com"}
    done = run_cli("create-admin", env=env)
    assert done.returncode == 2
    assert "FIRST_SUPERUSER_PASSWORD" in done.stderr
    assert tables(migrated_env["DATABASE_URL"]) >= EXPECTED_TABLES


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 8"), ("é" * 36 + "a", "72 bytes")],
    ids=["too-short", "73-bytes"],
)
def test_create_admin_refuses_bad_passwords(
    migrated_env: dict[str, str], password: str, message: str
) -> None:
    env = {
        **migrated_env,
        "FIRST_SUPERUSER_EMAIL": "root@example.com",
        "FIRST_SUPERUSER_PASSWORD": password,
    }
    done = run_cli("create-admin", env=env)
    assert done.returncode == 2
    assert message in done.stderr
    assert password not in done.stdout + done.stderr
    engine = sqlalchemy.create_engine(migrated_env["DATABASE_URL"])
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT count(*) FROM users")).scalar() == 0
    engine.dispose()


def test_bad_setting_is_exit_2_naming_the_variable(cli_env: dict[str, str]) -> None:
    done = run_cli("migrate", env={**cli_env, "BCRYPT_ROUNDS": "lots"})
    assert done.returncode == 2
    assert "BCRYPT_ROUNDS" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_command_and_help(cli_env: dict[str, str]) -> None:
    helped = run_cli("--help", env=cli_env)
    assert helped.returncode == 0
    assert "migrate" in helped.stdout and "create-admin" in helped.stdout
    wrong = run_cli("drop-everything", env=cli_env)
    assert wrong.returncode == 2


def test_create_admin_refuses_an_invalid_email(migrated_env: dict[str, str]) -> None:
    env = {
        **migrated_env,
        "FIRST_SUPERUSER_EMAIL": "root@exa mple.com",
        "FIRST_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
    }
    done = run_cli("create-admin", env=env)
    assert done.returncode == 2
    assert "FIRST_SUPERUSER_EMAIL is not a valid email address" in done.stderr
    assert "Traceback" not in done.stderr


# --- import-users -------------------------------------------------------------------------

MONOLITH_PASSWORD = "monolith passphrase 1"


def monolith_users() -> list[dict[str, Any]]:
    """Users as full-stack-fastapi-template stores them: argon2id (pwdlib) and bcrypt $2a$."""
    return [
        {
            "email": "Ada@Example.com",
            "hashed_password": argon2.PasswordHasher().hash(MONOLITH_PASSWORD),
            "full_name": "Ada Lovelace",
            "is_active": True,
            "is_superuser": True,
        },
        {
            "email": "bob@example.com",
            "hashed_password": bcrypt.hashpw(
                MONOLITH_PASSWORD.encode(), bcrypt.gensalt(rounds=5, prefix=b"2a")
            ).decode(),
            "full_name": None,
            "is_active": True,
            "is_superuser": False,
        },
    ]


def write_users(path: Path, users: list[dict[str, Any]]) -> Path:
    """CSV (with a header) for a .csv path, JSON lines otherwise."""
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(users[0]))
            writer.writeheader()
            writer.writerows(
                {
                    k: "" if v is None else str(v).lower() if isinstance(v, bool) else v
                    for k, v in u.items()
                }
                for u in users
            )
    else:
        path.write_text("".join(json.dumps(user) + "\n" for user in users), encoding="utf-8")
    return path


def import_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "AUTHGATE_VAR_DIR": str(tmp_path), "BCRYPT_ROUNDS": "4"}


def stored_users(database_url: str) -> dict[str, Any]:
    return {row.email: row for row in rows(database_url, sqlalchemy.select(User.__table__))}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_import_users_then_log_in_and_the_hash_is_replaced(
    api: Api, database_url: str, tmp_path: Path, suffix: str
) -> None:
    users = monolith_users()
    source = write_users(tmp_path / f"users{suffix}", users)
    done = run_cli("import-users", str(source), env=import_env(database_url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert "Done: 2 created, 0 skipped (email exists), 0 invalid, of 2 rows." in done.stdout
    assert all(user["hashed_password"] not in done.stdout + done.stderr for user in users)

    stored = stored_users(database_url)
    assert set(stored) == {"ada@example.com", "bob@example.com"}
    ada, bob = stored["ada@example.com"], stored["bob@example.com"]
    assert ada.hashed_password == users[0]["hashed_password"]  # imported as-is
    assert (ada.full_name, ada.is_active, ada.is_superuser) == ("Ada Lovelace", True, True)
    assert bob.hashed_password.startswith("$2a$05$")
    assert (bob.full_name, bob.is_superuser) == (None, False)

    for email in ("ada@example.com", "bob@example.com"):
        assert_problem(api.login(email, "not the password"), 401, "invalid-credentials")
        assert stored_users(database_url)[email].hashed_password == stored[email].hashed_password
        first = api.login(email, MONOLITH_PASSWORD)
        assert first.status_code == 200, first.text
        upgraded = stored_users(database_url)[email].hashed_password
        assert upgraded.startswith("$2b$04$")  # our prefix and BCRYPT_ROUNDS
        assert api.login(email, MONOLITH_PASSWORD).status_code == 200
        assert_problem(api.login(email, "not the password"), 401, "invalid-credentials")
    token = api.login("ada@example.com", MONOLITH_PASSWORD).json["access_token"]
    assert jwt.get_unverified_claims(token)["role"] == "admin"


def test_import_users_dry_run_writes_nothing(api: Api, database_url: str, tmp_path: Path) -> None:
    api.register("bob@example.com")
    source = write_users(tmp_path / "users.csv", monolith_users())
    done = run_cli("import-users", "--dry-run", str(source), env=import_env(database_url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert (
        "Dry run, nothing written: 1 to create, 1 skipped (email exists), 0 invalid, of 2 rows."
        in done.stdout
    )
    assert set(stored_users(database_url)) == {"bob@example.com"}


def test_import_users_skips_existing_users_untouched(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    api.register("bob@example.com")
    before = stored_users(database_url)["bob@example.com"].hashed_password
    source = write_users(tmp_path / "users.jsonl", monolith_users())
    done = run_cli("import-users", str(source), env=import_env(database_url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert "Done: 1 created, 1 skipped (email exists), 0 invalid, of 2 rows." in done.stdout
    assert stored_users(database_url)["bob@example.com"].hashed_password == before
    assert api.login("bob@example.com").status_code == 200  # still the registered password


def test_import_users_with_bad_rows_writes_nothing_and_names_each(
    database_url: str, tmp_path: Path
) -> None:
    good = monolith_users()
    bad = [
        {**good[1], "email": "carol@exa mple.com"},
        {**good[1], "email": "dan@example.com", "hashed_password": "plaintext-password"},
        {**good[1], "email": "eve@example.com", "hashed_password": "$pbkdf2-sha256$29000$x$y"},
        {**good[1], "email": "fay@example.com", "is_active": "maybe"},
        {**good[1], "email": "ADA@example.com"},
    ]
    source = write_users(tmp_path / "users.csv", [*good, *bad])
    done = run_cli("import-users", str(source), env=import_env(database_url, tmp_path))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert "line 4: email: not a valid email address" in lines
    unsupported = "unsupported hash format (expected bcrypt $2a$/$2b$ or argon2id)"
    assert f"line 5: hashed_password: {unsupported}" in lines
    assert f"line 6: hashed_password: {unsupported}" in lines
    assert "line 7: is_active: not a boolean (use true or false)" in lines
    assert "line 8: email: duplicate of line 2" in lines
    assert "nothing was written" in done.stderr
    assert "Nothing written: 2 to create, 0 skipped (email exists), 5 invalid, of 7 rows." in (
        done.stdout
    )
    assert "plaintext-password" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert stored_users(database_url) == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("email,password\na@example.com,x\n", "unknown CSV column(s) 'password'"),
        ("email,full_name\na@example.com,A\n", "lacks the column(s) hashed_password"),
    ],
)
def test_import_users_refuses_a_file_it_cannot_read(
    cli_env: dict[str, str], tmp_path: Path, content: str, message: str
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(content, encoding="utf-8")
    done = run_cli("import-users", str(source), env=cli_env)
    assert done.returncode == 2
    assert message in done.stderr
    missing = run_cli("import-users", str(tmp_path / "absent.csv"), env=cli_env)
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


def test_import_users_reports_bad_json_lines(migrated_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "users.jsonl"
    good = json.dumps({**monolith_users()[1], "is_superuser": "yes"})
    numeric = json.dumps({"email": "y@example.com", "hashed_password": 5})
    source.write_text(
        f'{good}\n\nnot json\n["a"]\n{{"email": "x@example.com", "role": "admin"}}\n{numeric}\n'
    )
    done = run_cli("import-users", str(source), env=migrated_env)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert "line 3: row: is not valid JSON" in lines
    assert "line 4: row: is not a JSON object" in lines
    assert "line 5: row: unknown field(s) 'role'" in lines
    assert "line 6: hashed_password: must be text" in lines
    assert "Nothing written: 1 to create, 0 skipped (email exists), 4 invalid, of 5 rows." in (
        done.stdout
    )


def test_create_oauth_client_prints_the_secret_once_and_stores_its_hash(
    migrated_env: dict[str, str],
) -> None:
    env = {**migrated_env, "OAUTH_API_SCOPES": "invoices:read"}
    done = run_cli(
        "create-oauth-client",
        "--name",
        "Grafana",
        "--type",
        "confidential",
        "--redirect-uri",
        "https://grafana.example.com/login/generic_oauth",
        "--grant",
        "authorization_code",
        "--grant",
        "refresh_token",
        "--scope",
        "openid profile",
        "--scope",
        "invoices:read",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    printed = {
        name.strip(): value.strip()
        for name, _, value in (line.partition(": ") for line in done.stdout.splitlines())
        if name.startswith("  ") and value
    }
    assert "Created OAuth client 'Grafana' (confidential)." in done.stdout
    assert "shown only this once" in done.stdout
    (row,) = rows(
        migrated_env["DATABASE_URL"],
        sqlalchemy.select(OAuthClient).where(OAuthClient.client_id == printed["client_id"]),
    )
    assert row.client_secret_hash == hashlib.sha256(printed["client_secret"].encode()).hexdigest()
    assert row.scopes == ["openid", "profile", "invoices:read"]
    assert row.grant_types == ["authorization_code", "refresh_token"]
    assert printed["scopes"] == "openid profile invoices:read"


def test_create_oauth_client_refuses_a_bad_redirect_naming_it(
    migrated_env: dict[str, str],
) -> None:
    done = run_cli(
        "create-oauth-client",
        "--name",
        "CLI",
        "--type",
        "public",
        "--redirect-uri",
        "http://app.example.com/cb",
        "--grant",
        "authorization_code",
        env=migrated_env,
    )
    assert done.returncode == 2
    assert "error: redirect_uris.0: http is only for loopback hosts" in done.stderr
    assert rows(migrated_env["DATABASE_URL"], sqlalchemy.select(OAuthClient)) == []
    public = run_cli(
        "create-oauth-client",
        "--name",
        "CLI",
        "--type",
        "public",
        "--redirect-uri",
        "http://127.0.0.1/cb",
        "--grant",
        "authorization_code",
        env=migrated_env,
    )
    assert public.returncode == 0, public.stderr
    assert "client_secret" not in public.stdout
