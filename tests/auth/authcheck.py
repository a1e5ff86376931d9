"""Assertions and database look-ups shared by the auth behaviour tests (imported, not a conftest).

The behaviour tests check three things about every answer: the status, the problem+json
body (`type`, `status`, `errors[].field`) and what the database holds afterwards.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy
from falcon import testing
from problem_observer import observe

from auth_service.db.models import Base, RefreshToken, Session, User
from authgate_common.problem_types import ProblemType

PROBLEM_JSON = "application/problem+json"


def sha256_hex(token: str) -> str:
    """What the database keeps instead of an opaque token."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_postgres(database_url: str) -> bool:
    """Whether the test runs on the PostgreSQL parameter."""
    return database_url.startswith("postgresql")


def assert_problem(
    result: testing.Result,
    status: int,
    code: str | None = None,
    fields: Iterable[str] = (),
) -> dict[str, Any]:
    """Assert an RFC 9457 answer with this status, type code and field names; its body."""
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == PROBLEM_JSON
    body = result.json
    assert body["status"] == status
    assert body["title"]
    if code is not None:
        observe(body, ProblemType(code))
    named = {error["field"] for error in body.get("errors", [])}
    for field in fields:
        assert field in named, body
    return body


def assert_unauthorized_token(result: testing.Result, code: str | None = None) -> None:
    """A protected operation refused a token: 401 with the RFC 6750 invalid_token challenge."""
    assert_problem(result, 401, code)
    assert result.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def engine(database_url: str) -> sqlalchemy.Engine:
    """A throwaway engine for test look-ups (dispose it)."""
    return sqlalchemy.create_engine(database_url)


def rows(database_url: str, statement: Any) -> list[Any]:
    """Run a SELECT and return all rows."""
    eng = engine(database_url)
    try:
        with eng.connect() as connection:
            return list(connection.execute(statement))
    finally:
        eng.dispose()


def execute(database_url: str, statement: Any) -> int:
    """Run a DML statement in its own transaction; the row count."""
    eng = engine(database_url)
    try:
        with eng.begin() as connection:
            return connection.execute(statement).rowcount
    finally:
        eng.dispose()


def refresh_row(database_url: str, token: str) -> Any:
    """The refresh_tokens row of an opaque token (looked up by its hash)."""
    found = rows(
        database_url,
        sqlalchemy.select(RefreshToken.__table__).where(
            RefreshToken.token_hash == sha256_hex(token)
        ),
    )
    assert len(found) == 1, f"{len(found)} rows for the token"
    return found[0]


def session_row(database_url: str, session_id: Any) -> Any:
    """The sessions row of a session id."""
    found = rows(
        database_url,
        sqlalchemy.select(Session.__table__).where(Session.id == session_id),
    )
    assert len(found) == 1
    return found[0]


def user_row(database_url: str, email: str) -> Any:
    """The users row of a (normalised) email, or None."""
    found = rows(database_url, sqlalchemy.select(User.__table__).where(User.email == email))
    return found[0] if found else None


def live_sessions(database_url: str, user_id: str) -> list[Any]:
    """The user's sessions that are not revoked."""
    return rows(
        database_url,
        sqlalchemy.select(Session.__table__).where(
            Session.user_id == uuid.UUID(user_id), Session.revoked_at.is_(None)
        ),
    )


def ago(seconds: float) -> datetime:
    """An aware UTC time `seconds` in the past."""
    return datetime.now(UTC) - timedelta(seconds=seconds)


def empty_all_tables(database_url: str) -> None:
    """Delete every row, children first (for tests that build their own app)."""
    eng = engine(database_url)
    try:
        with eng.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
    finally:
        eng.dispose()
