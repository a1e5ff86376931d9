"""Operator commands: `migrate` and `create-admin` (python -m auth_service.cli --help)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from sqlalchemy.engine import make_url

from auth_service import errors
from auth_service.db.migrations import upgrade
from auth_service.security.passwords import MAX_PASSWORD_BYTES
from auth_service.services.accounts import AccountService, normalize_email
from auth_service.settings import Settings, SettingsError

MIN_PASSWORD_CHARS = 8


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status says whether it worked."""
    parser = argparse.ArgumentParser(prog="python -m auth_service.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply every pending migration (alembic upgrade head)")
    commands.add_parser(
        "create-admin",
        help="create the first superuser from FIRST_SUPERUSER_EMAIL and "
        "FIRST_SUPERUSER_PASSWORD (prompted for when unset); does nothing if it exists",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return migrate(settings)
    return create_admin(settings)


def migrate(settings: Settings) -> int:
    """Bring the database schema to the newest revision."""
    print(f"Migrating {_safe_url(settings.database_url)} to the latest schema ...", flush=True)
    upgrade(settings.database_url)
    print("Done: the database schema is up to date.")
    return 0


def create_admin(settings: Settings) -> int:
    """Create the first superuser; the password never comes from the command line."""
    from auth_service.app import build_services

    email = os.environ.get("FIRST_SUPERUSER_EMAIL", "").strip()
    if not email:
        print("error: set FIRST_SUPERUSER_EMAIL to the admin's email", file=sys.stderr)
        return 2
    # Operators run this against the local default or a compose stack: say which.
    print(f"Database: {_safe_url(settings.database_url)}", flush=True)
    services = build_services(settings)
    try:
        # Checked before the prompt: nobody types a password twice for nothing.
        if services.accounts.email_taken(email):
            print(f"A user {normalize_email(email)} already exists; nothing changed.")
            return 0
        return _create_admin(services.accounts, email)
    finally:
        services.engine.dispose()


def _create_admin(accounts: AccountService, email: str) -> int:
    password = os.environ.get("FIRST_SUPERUSER_PASSWORD") or _prompt_password()
    if password is None:
        print(
            "error: set FIRST_SUPERUSER_PASSWORD or run this in a terminal to be prompted",
            file=sys.stderr,
        )
        return 2
    if len(password) < MIN_PASSWORD_CHARS:
        print(
            f"error: the password must have at least {MIN_PASSWORD_CHARS} characters",
            file=sys.stderr,
        )
        return 2
    try:
        created = accounts.ensure_admin(email, password)
    except errors.PasswordTooLong:
        print(
            f"error: the password is longer than {MAX_PASSWORD_BYTES} bytes of UTF-8",
            file=sys.stderr,
        )
        return 2
    if created:
        print(f"Created superuser {normalize_email(email)}.")
    else:
        # NOTE: created concurrently between the check and here.
        print(f"A user {normalize_email(email)} already exists; nothing changed.")
    return 0


def _prompt_password() -> str | None:
    if not sys.stdin.isatty():
        return None
    while True:
        password = getpass.getpass(
            f"Password for the new superuser (at least {MIN_PASSWORD_CHARS} characters): "
        )
        if len(password) >= MIN_PASSWORD_CHARS and password == getpass.getpass("Repeat it: "):
            return password
        print("The passwords differ or are too short; try again.", file=sys.stderr)


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
