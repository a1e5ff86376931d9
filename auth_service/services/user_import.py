"""Importing users from the monolith: a CSV or JSON-lines file of already-hashed passwords.

Every row is checked before anything is written, and the whole file goes in one
transaction: a file with any invalid row writes nothing, so a run is never half-done
and can simply be repeated after the file is fixed (users that exist are skipped).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import AuditEvent, User, utcnow
from auth_service.security.passwords import is_supported_hash
from auth_service.services.audit import EventType
from auth_service.services.emails import canonical_email

REQUIRED_FIELDS = ("email", "hashed_password")
FIELDS = (*REQUIRED_FIELDS, "full_name", "is_active", "is_superuser")
FORMATS = ("csv", "jsonl")
MAX_FULL_NAME = 255  # users.full_name
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_EXTRA_VALUES = "__extra_values__"  # where csv puts values beyond the header's columns
# PERF: existing emails are looked up, and users inserted, this many at a time.
BATCH = 500


class ImportFileError(Exception):
    """The file as a whole cannot be read (encoding, CSV header): nothing is imported."""


@dataclass(frozen=True)
class RowError:
    """Why one row of the file cannot be imported; never quotes the row's values."""

    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


@dataclass(frozen=True)
class ImportedUser:
    """A checked row, ready to insert."""

    line: int
    email: str
    hashed_password: str
    full_name: str | None
    is_active: bool
    is_superuser: bool


@dataclass
class ImportPlan:
    """The checked file: users to insert and the rows that are wrong."""

    users: list[ImportedUser] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    rows: int = 0

    @property
    def invalid_rows(self) -> int:
        """How many rows have at least one error."""
        return len({error.line for error in self.errors})


@dataclass(frozen=True)
class ImportResult:
    """What a run did (or, in a dry run, would do)."""

    created: int
    skipped_existing: int


def detect_format(path: Path, text: str) -> str:
    """`jsonl` for .jsonl/.ndjson/.json files or text starting with `{`; else `csv`."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if path.suffix.lower() == ".csv":
        return "csv"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def read_text(path: Path) -> str:
    """The file's text; UTF-8, with or without the byte-order mark spreadsheets write."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as ex:
        raise ImportFileError(f"{path} is not UTF-8 (byte {ex.start})") from None
    except OSError as ex:
        raise ImportFileError(f"cannot read {path}: {ex.strerror}") from None


def parse_rows(text: str, file_format: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(line number, raw fields) for each record, or a RowError for an unreadable one."""
    if file_format == "csv":
        return _csv_rows(text)
    return _jsonl_rows(text)


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey=_EXTRA_VALUES)
    header = reader.fieldnames or []
    _check_header(header)
    for record in reader:
        line = reader.line_num
        if _EXTRA_VALUES in record:
            yield line, RowError(line, "row", "has more values than the header has columns")
        elif None in record.values():
            yield line, RowError(line, "row", "has fewer values than the header has columns")
        else:
            yield line, dict(record)


def _check_header(header: Sequence[str]) -> None:
    if not header:
        raise ImportFileError("the CSV file is empty; its first line must name the columns")
    unknown = [name for name in header if name not in FIELDS]
    if unknown:
        raise ImportFileError(
            f"unknown CSV column(s) {', '.join(map(repr, unknown))}; "
            f"the columns are {', '.join(FIELDS)}"
        )
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if missing:
        raise ImportFileError(f"the CSV header lacks the column(s) {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise ImportFileError("the CSV header names a column twice")


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            yield line, RowError(line, "row", "is not valid JSON")
            continue
        if not isinstance(record, dict):
            yield line, RowError(line, "row", "is not a JSON object")
            continue
        unknown = sorted(name for name in record if name not in FIELDS)
        if unknown:
            yield line, RowError(line, "row", f"unknown field(s) {', '.join(map(repr, unknown))}")
            continue
        yield line, record


def check_rows(records: Iterable[tuple[int, dict[str, Any] | RowError]]) -> ImportPlan:
    """Check every record and the file as a whole (no email twice); reads no database."""
    plan = ImportPlan()
    first_line: dict[str, int] = {}
    for line, record in records:
        plan.rows += 1
        if isinstance(record, RowError):
            plan.errors.append(record)
            continue
        row_errors: list[RowError] = []
        user = _check_record(line, record, row_errors)
        if user is not None and user.email in first_line:
            row_errors.append(
                RowError(line, "email", f"duplicate of line {first_line[user.email]}")
            )
        if row_errors or user is None:
            plan.errors.extend(row_errors)
            continue
        first_line[user.email] = line
        plan.users.append(user)
    return plan


def _check_record(line: int, record: dict[str, Any], found: list[RowError]) -> ImportedUser | None:
    def check(name: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(record.get(name))
        except ValueError as ex:
            found.append(RowError(line, name, str(ex)))
            return None

    email = check("email", _email)
    hashed = check("hashed_password", _hash)
    full_name = check("full_name", _full_name)
    is_active = check("is_active", _boolean(default=True))
    is_superuser = check("is_superuser", _boolean(default=False))
    if found:
        return None
    return ImportedUser(line, email, hashed, full_name, is_active, is_superuser)


def _email(value: Any) -> str:
    try:
        return canonical_email(_require_text(value))
    except errors.InvalidEmail:
        raise ValueError("not a valid email address") from None


def _hash(value: Any) -> str:
    hashed = _require_text(value)
    if not is_supported_hash(hashed):
        raise ValueError("unsupported hash format (expected bcrypt $2a$/$2b$ or argon2id)")
    return hashed


def _require_text(value: Any) -> str:
    if value is None or value == "":
        raise ValueError("is required")
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def _full_name(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be text")
    if len(value) > MAX_FULL_NAME:
        raise ValueError(f"longer than {MAX_FULL_NAME} characters")
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


def _boolean(*, default: bool) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("not a boolean (use true or false)")

    return parse


def import_users(
    sessions: sessionmaker[DbSession],
    plan: ImportPlan,
    *,
    dry_run: bool,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Insert the plan's users that do not exist yet, all in one transaction.

    A plan with errors writes nothing, nor does a dry run; both still count what exists.
    A user registering the same email meanwhile fails the whole run (the unique index):
    running it again skips that user.
    """
    with sessions.begin() as db:
        existing = _existing_emails(db, [user.email for user in plan.users])
        new = [user for user in plan.users if user.email not in existing]
        if not dry_run and not plan.errors:
            _insert(db, new, progress)
    return ImportResult(created=len(new), skipped_existing=len(existing))


def _existing_emails(db: DbSession, emails: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(emails), BATCH):
        chunk = emails[start : start + BATCH]
        found.update(db.scalars(select(User.email).where(User.email.in_(chunk))))
    return found


def _insert(
    db: DbSession, users: list[ImportedUser], progress: Callable[[int, int], None] | None
) -> None:
    now = utcnow()
    for start in range(0, len(users), BATCH):
        chunk = users[start : start + BATCH]
        rows = [
            {
                "id": uuid.uuid4(),
                "email": user.email,
                "hashed_password": user.hashed_password,
                "full_name": user.full_name,
                "is_active": user.is_active,
                "is_superuser": user.is_superuser,
                # NOTE: the operator who imports vouches for the addresses (as an admin
                # creating a user does); nothing is mailed.
                "email_verified": True,
                "created_at": now,
                "updated_at": now,
            }
            for user in chunk
        ]
        db.execute(insert(User), rows)
        # NOTE: one `user.created` per imported user, in the import's one transaction.
        db.execute(
            insert(AuditEvent),
            [
                {
                    "id": uuid.uuid4(),
                    "occurred_at": now,
                    "event_type": str(EventType.USER_CREATED),
                    "user_id": row["id"],
                    "details": {"via": "import", "is_superuser": row["is_superuser"]},
                }
                for row in rows
            ],
        )
        if progress is not None:
            progress(start + len(chunk), len(users))
