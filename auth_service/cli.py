"""Operator commands: `migrate`, `create-admin`, `import-users`, `send-mail`, `prune-audit`
and `create-oauth-client` (python -m auth_service.cli --help)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from auth_service import errors
from auth_service.db.migrations import upgrade
from auth_service.db.session import make_engine, make_sessionmaker
from auth_service.security.passwords import MAX_PASSWORD_BYTES
from auth_service.services.accounts import AccountService
from auth_service.services.audit import AuditTrail
from auth_service.services.emails import canonical_email
from auth_service.services.oauth_clients import (
    CLIENT_TYPES,
    GRANT_TYPES,
    ClientMetadata,
    OAuthClientService,
    parse_scopes,
)
from auth_service.services.revocation import RevocationList
from auth_service.services.user_import import (
    FIELDS,
    FORMATS,
    ImportFileError,
    ImportPlan,
    check_rows,
    detect_format,
    import_users,
    parse_rows,
    read_text,
)
from auth_service.settings import Settings, SettingsError

MIN_PASSWORD_CHARS = 8
MAX_CLIENT_NAME_CHARS = 255  # the spec's OAuthClientName


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
    importer = commands.add_parser(
        "import-users",
        help="import users with their password hashes from the monolith (CSV or JSON lines)",
        description=f"Import users from FILE: CSV with a header, or JSON lines, with the fields "
        f"{', '.join(FIELDS)} (email and hashed_password required). Hashes may be bcrypt "
        "($2a$/$2b$) or argon2id; each is replaced by this service's bcrypt on the user's "
        "first login. Users whose email exists are skipped. Any invalid row means nothing "
        "is written (exit status 1); fix the file and run again.",
    )
    importer.add_argument("file", type=Path, help="the CSV or JSON-lines file")
    importer.add_argument(
        "--dry-run", action="store_true", help="check the file and report; write nothing"
    )
    importer.add_argument(
        "--format",
        choices=FORMATS,
        help="the file's format (default: from the extension, else from the content)",
    )
    send = commands.add_parser(
        "send-mail",
        help="deliver the mail outbox once, printing progress (--forever: keep delivering)",
    )
    send.add_argument(
        "--forever",
        action="store_true",
        help="keep delivering (every MAIL_POLL_SECONDS) until SIGTERM or Ctrl-C",
    )
    commands.add_parser(
        "prune-audit",
        help="delete audit events older than AUDIT_RETENTION_DAYS, printing progress",
    )
    _add_create_oauth_client(commands)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "import-users":
        return import_users_from(settings, args.file, dry_run=args.dry_run, file_format=args.format)
    if args.command == "send-mail":
        return send_mail(settings, forever=args.forever)
    if args.command == "prune-audit":
        return prune_audit(settings)
    if args.command == "create-oauth-client":
        return create_oauth_client(settings, args)
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
    try:
        email = canonical_email(email, field="FIRST_SUPERUSER_EMAIL")
    except errors.InvalidEmail:
        print("error: FIRST_SUPERUSER_EMAIL is not a valid email address", file=sys.stderr)
        return 2
    # Operators run this against the local default or a compose stack: say which.
    print(f"Database: {_safe_url(settings.database_url)}", flush=True)
    services = build_services(settings)
    try:
        # Checked before the prompt: nobody types a password twice for nothing.
        if services.accounts.email_taken(email):
            print(f"A user {email} already exists; nothing changed.")
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
        print(f"Created superuser {email}.")
    else:
        # NOTE: created concurrently between the check and here.
        print(f"A user {email} already exists; nothing changed.")
    return 0


def import_users_from(
    settings: Settings, path: Path, *, dry_run: bool, file_format: str | None
) -> int:
    """Check every row, then import all of them in one transaction, or nothing."""
    try:
        text = read_text(path)
        file_format = file_format or detect_format(path, text)
        print(f"Checking {path} ({file_format.upper()}) ...", flush=True)
        plan = check_rows(parse_rows(text, file_format))
    except ImportFileError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    for error in plan.errors:
        print(str(error), file=sys.stderr)
    engine = make_engine(settings.database_url)
    try:
        result = import_users(
            make_sessionmaker(engine), plan, dry_run=dry_run, progress=_print_progress
        )
    finally:
        engine.dispose()
    print(_summary(plan, result.created, result.skipped_existing, dry_run=dry_run))
    if plan.errors:
        print(
            f"error: {len(plan.errors)} problem(s) in the file; nothing was written. "
            "Fix the lines above and run again.",
            file=sys.stderr,
        )
        return 1
    return 0


def _summary(plan: ImportPlan, created: int, skipped: int, *, dry_run: bool) -> str:
    counts = f"{skipped} skipped (email exists), {plan.invalid_rows} invalid, of {plan.rows} rows"
    if dry_run:
        return f"Dry run, nothing written: {created} to create, {counts}."
    if plan.errors:
        return f"Nothing written: {created} to create, {counts}."
    return f"Done: {created} created, {counts}."


def _print_progress(done: int, total: int) -> None:
    print(f"  written {done} of {total} users", flush=True)


def send_mail(settings: Settings, *, forever: bool) -> int:
    """Deliver the outbox from this process, beside or instead of the workers' senders."""
    from auth_service.app import build_services

    services = build_services(settings)
    sender = services.mail_sender
    try:
        if forever:
            print("Delivering the mail outbox until stopped (SIGTERM or Ctrl-C) ...", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sender.stop())
            with contextlib.suppress(KeyboardInterrupt):
                sender.run()
            return 0
        report = sender.drain(progress=_print_delivery)
        backlog = sender.backlog()
    finally:
        services.mail_engine.dispose()
        services.engine.dispose()
    pending = "unknown" if backlog is None else str(backlog.mail)
    print(
        f"Done: {report.prepared} reset request(s) became mail; sent {report.sent}, "
        f"to retry {report.retry}, failed for good {report.failed}; still pending: {pending}."
    )
    return 0


def prune_audit(settings: Settings) -> int:
    """Delete the audit events past the retention period; say how many."""
    days = settings.audit_retention_days
    print(
        f"Pruning audit events older than {days} day(s) from "
        f"{_safe_url(settings.database_url)} ...",
        flush=True,
    )
    engine = make_engine(settings.database_url)
    try:
        deleted = AuditTrail(make_sessionmaker(engine), days).prune(progress=_print_pruned)
    finally:
        engine.dispose()
    print(f"Done: deleted {deleted} audit event(s) older than {days} day(s).")
    return 0


def _print_pruned(deleted: int) -> None:
    print(f"  deleted {deleted} so far", flush=True)


def _add_create_oauth_client(commands: Any) -> None:
    client = commands.add_parser(
        "create-oauth-client",
        help="register an OAuth client; prints its client_id and (confidential) secret once",
        description="Register an application that signs its users in with this service, "
        "under the rules of POST /api/v1/oauth-clients (README, OAuth clients). A "
        "confidential client's secret is printed only this once; only its hash is kept.",
    )
    client.add_argument("--name", required=True, help="what admins and users see")
    client.add_argument("--type", required=True, choices=CLIENT_TYPES, dest="client_type")
    client.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        dest="redirect_uris",
        help="an exact redirect URI (repeat for more); needed with authorization_code",
    )
    client.add_argument(
        "--grant",
        action="append",
        required=True,
        choices=GRANT_TYPES,
        dest="grant_types",
        help="a grant type the client may use (repeat for more)",
    )
    client.add_argument(
        "--scope",
        action="append",
        default=[],
        dest="scopes",
        help="a scope the client may ask for (repeat, or several space-separated)",
    )


def create_oauth_client(settings: Settings, args: argparse.Namespace) -> int:
    """Register a client as the operator; field errors are printed as the API names them."""
    if not 1 <= len(args.name) <= MAX_CLIENT_NAME_CHARS:
        print(f"error: --name must have 1 to {MAX_CLIENT_NAME_CHARS} characters", file=sys.stderr)
        return 2
    metadata = ClientMetadata(
        name=args.name,
        redirect_uris=list(dict.fromkeys(args.redirect_uris)),
        grant_types=list(dict.fromkeys(args.grant_types)),
        scopes=list(parse_scopes(" ".join(args.scopes))),
    )
    print(f"Database: {_safe_url(settings.database_url)}", flush=True)
    engine = make_engine(settings.database_url)
    try:
        clients = OAuthClientService(
            make_sessionmaker(engine),
            api_scopes=settings.oauth_api_scopes,
            revocations=RevocationList(settings.redis_url, settings.access_token_ttl_seconds),
        )
        issued = clients.register(args.client_type, metadata)
    except errors.InvalidClientMetadata as ex:
        for error in ex.field_errors():
            print(f"error: {error['field']}: {error['message']}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    client = issued.client
    print(f"Created OAuth client {client.name!r} ({client.client_type}).")
    print(f"  client_id:     {client.client_id}")
    if issued.client_secret is not None:
        print(f"  client_secret: {issued.client_secret}")
        print("  (shown only this once: store it now; only its hash is kept)")
    print(f"  grant_types:   {' '.join(client.grant_types)}")
    print(f"  redirect_uris: {' '.join(client.redirect_uris) or '-'}")
    print(f"  scopes:        {' '.join(client.scopes) or '-'}")
    return 0


def _print_delivery(row_id: uuid.UUID, outcome: str) -> None:
    print(f"mail {row_id}: {outcome}", flush=True)


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
