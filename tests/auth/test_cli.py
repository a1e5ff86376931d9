"""Operator commands as operators run them: `python -m auth_service.cli migrate|create-admin`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
from falcon import testing

from auth_service.app import create_app
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
