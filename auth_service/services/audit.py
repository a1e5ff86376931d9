"""The audit trail: security events, each written in the transaction of its action.

`record` only adds a row to the caller's SQLAlchemy session, so the event commits or
rolls back with what it describes: nothing is recorded that did not happen, and nothing
that happened is left out. A failure that changes nothing else (a wrong password) is
recorded in the transaction that counts it for the login throttle.

SECURITY: `details` is for small facts (a reason, field names, a count), never a secret:
no password, token, code or hash, and no email of a non-user.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import AuditEvent, utcnow

MAX_USER_AGENT = 512  # audit_events.user_agent, as sessions.user_agent
# Rows deleted per transaction by `prune`: short transactions, no long table lock.
PRUNE_BATCH = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR_RE = re.compile(r"^([0-9]{1,17})\.([0-9a-f]{32})$")


class EventType(StrEnum):
    """Every event the trail knows; the spec's AuditEventType enum lists the same names."""

    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    LOGIN_THROTTLED = "login.throttled"
    # A signed-in user's password asked again (password change, MFA changes) was wrong.
    REAUTH_FAILED = "reauth.failed"
    MFA_ENROLLED = "mfa.enrolled"
    MFA_REMOVED = "mfa.removed"
    MFA_FAILED = "mfa.failed"
    MFA_RECOVERY_CODES_REGENERATED = "mfa.recovery_codes_regenerated"
    PASSWORD_CHANGED = "password.changed"  # noqa: S105 - an event name
    PASSWORD_RESET = "password.reset"  # noqa: S105 - an event name
    SESSION_REVOKED = "session.revoked"
    SESSION_REUSE_DETECTED = "session.reuse_detected"
    EMAIL_VERIFIED = "email.verified"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"
    USER_DEACTIVATED = "user.deactivated"
    USER_UNLOCKED = "user.unlocked"
    OAUTH_CLIENT_CREATED = "oauth_client.created"
    OAUTH_CLIENT_UPDATED = "oauth_client.updated"
    OAUTH_CLIENT_DELETED = "oauth_client.deleted"


@dataclass(frozen=True)
class ClientInfo:
    """Who is asking: recorded on sessions, refresh tokens and audit events."""

    user_agent: str | None
    ip_address: str | None


def record(
    db: DbSession,
    event_type: EventType,
    *,
    actor_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
    origin: ClientInfo | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one event to the caller's transaction (it commits or rolls back with it)."""
    user_agent = origin.user_agent if origin is not None else None
    db.add(
        AuditEvent(
            id=uuid.uuid4(),
            occurred_at=utcnow(),
            event_type=str(event_type),
            actor_id=actor_id,
            user_id=user_id,
            session_id=session_id,
            client_address=origin.ip_address if origin is not None else None,
            user_agent=user_agent[:MAX_USER_AGENT] if user_agent else None,
            details=details or {},
        )
    )


def recorder(
    event_type: EventType,
    *,
    actor_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
    origin: ClientInfo | None = None,
    details: dict[str, Any] | None = None,
) -> Callable[[DbSession], None]:
    """`record` for a transaction opened elsewhere (the login throttle's failure count)."""

    def write(db: DbSession) -> None:
        record(
            db,
            event_type,
            actor_id=actor_id,
            user_id=user_id,
            session_id=session_id,
            origin=origin,
            details=details,
        )

    return write


def record_revocations(
    db: DbSession,
    session_ids: Iterable[str],
    *,
    user_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    origin: ClientInfo | None,
    reason: str,
) -> None:
    """One `session.revoked` per session a user or an admin ended on purpose."""
    for sid in session_ids:
        record(
            db,
            EventType.SESSION_REVOKED,
            actor_id=actor_id,
            user_id=user_id,
            session_id=uuid.UUID(sid),
            origin=origin,
            details={"reason": reason},
        )


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventCursor:
    """The last event of a page: the next page starts after it (newest first)."""

    occurred_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        """`<micros>.<id hex>`; opaque to clients (the spec's pattern is its only rule)."""
        return f"{(self.occurred_at - _EPOCH) // _MICROSECOND}.{self.id.hex}"

    @classmethod
    def decode(cls, text: str) -> EventCursor:
        """Parse a cursor this service issued; anything else is InvalidCursor.

        NOTE: every string the spec's pattern admits is a position, so a schema-valid
        request never fails here; the check stands for callers that skip the spec.
        """
        match = _CURSOR_RE.match(text)
        if match is None:
            raise errors.InvalidCursor("The cursor is malformed.", field="cursor")
        micros, hex_id = match.groups()
        # NOTE: 17 digits of microseconds stay far below datetime's year 9999.
        return cls(_EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=hex_id))


@dataclass(frozen=True)
class EventQuery:
    """Filters of a listing; all optional."""

    user_id: uuid.UUID | None = None
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class EventPage:
    """One page, newest first, and the cursor of the next (None at the end)."""

    items: list[AuditEvent]
    next_cursor: str | None


class AuditTrail:
    """Reads and prunes the trail (writing is `record`, in each action's transaction)."""

    def __init__(self, sessions: sessionmaker[DbSession], retention_days: int) -> None:
        self._sessions = sessions
        self._retention = timedelta(days=retention_days)

    def page(self, query: EventQuery, cursor: str | None, limit: int) -> EventPage:
        """Events matching `query`, newest first, after `cursor` (keyset: no skipped or
        repeated rows while new events arrive)."""
        after = EventCursor.decode(cursor) if cursor is not None else None
        statement = select(AuditEvent)
        if query.user_id is not None:
            statement = statement.where(AuditEvent.user_id == query.user_id)
        if query.types:
            statement = statement.where(AuditEvent.event_type.in_(query.types))
        if query.since is not None:
            statement = statement.where(AuditEvent.occurred_at >= query.since)
        if query.until is not None:
            statement = statement.where(AuditEvent.occurred_at < query.until)
        if after is not None:
            statement = statement.where(
                or_(
                    AuditEvent.occurred_at < after.occurred_at,
                    and_(AuditEvent.occurred_at == after.occurred_at, AuditEvent.id < after.id),
                )
            )
        statement = statement.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        with self._sessions() as db:
            rows = list(db.scalars(statement.limit(limit + 1)))
        items = rows[:limit]
        if len(rows) <= limit:
            return EventPage(items, None)
        last = items[-1]
        return EventPage(items, EventCursor(last.occurred_at, last.id).encode())

    def prune(self, progress: Callable[[int], None] | None = None) -> int:
        """Delete events older than the retention period, in batches; how many."""
        cutoff = utcnow() - self._retention
        deleted = 0
        while True:
            with self._sessions.begin() as db:
                ids = list(
                    db.scalars(
                        select(AuditEvent.id)
                        .where(AuditEvent.occurred_at < cutoff)
                        .limit(PRUNE_BATCH)
                    )
                )
                if ids:
                    db.execute(delete(AuditEvent).where(AuditEvent.id.in_(ids)))
            if not ids:
                return deleted
            deleted += len(ids)
            if progress is not None:
                progress(deleted)
