"""`make migrate` + `make create-admin` with no compose stack running: the embedded default.

The compose sequence (make up, make migrate, make create-admin) is tested in
test_compose_stack.py; this is the other half: without a stack, the same two commands act
on the local database (SQLite under AUTHGATE_VAR_DIR) and say so.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "Local-Admin-Pass-3"


def _make(target: str, *make_vars: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "FIRST_SUPERUSER_", "AUTHGATE_", "COMPOSE_"))
    }
    return subprocess.run(
        ["make", "--no-print-directory", target, *make_vars],
        cwd=ROOT,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.slow
def test_migrate_and_create_admin_act_on_the_local_default(tmp_path: Path) -> None:
    # A project name no stack runs under: "no compose stack running" whatever this host has.
    make_vars = [
        f"COMPOSE_PROJECT_NAME=authgate-absent-{secrets.token_hex(4)}",
        f"AUTHGATE_VAR_DIR={tmp_path}",
        "FIRST_SUPERUSER_EMAIL=local-admin@example.com",
        "BCRYPT_ROUNDS=4",
    ]
    database = tmp_path / "authgate.db"
    migrate = _make("migrate", *make_vars)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    assert "make migrate: local database" in migrate.stdout
    assert f"Migrating sqlite:///{database}" in migrate.stdout
    created = _make("create-admin", *make_vars, FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD)
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
    assert "make create-admin: local database" in created.stdout
    assert f"Database: sqlite:///{database}" in created.stdout
    assert "Created superuser local-admin@example.com" in created.stdout
    engine = sqlalchemy.create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text("SELECT email, is_superuser FROM users")).all()
    engine.dispose()
    assert [(email, bool(admin)) for email, admin in rows] == [("local-admin@example.com", True)]
