"""Ending sessions: in the database (the source of truth), in Redis, and in the feed.

The gateway learns of revocations two ways: from Redis, when REDIS_URL is set (written at
once by RevocationList), and always by polling GET /internal/v1/revoked-sessions, which
reads the session_revocations rows written in the revoking transaction (RevocationFeed).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Select, and_, delete, or_, select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import Session, SessionRevocation, utcnow
from auth_service.db.session import rows_changed
from auth_service.db.upsert import insert_ignore

REVOKED_SID_PREFIX = "authgate:revoked-sid:"
# NOTE: how long a revocation may take from its timestamp to its commit (transaction time,
# clock skew between auth replicas) and still reach the feed; see RevocationFeed.
FEED_OVERLAP = timedelta(seconds=60)
FEED_PURGE_INTERVAL_SECONDS = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NIL = uuid.UUID(int=0)
_CURSOR_RE = re.compile(r"^([0-9]{1,17})\.([0-9a-f]{32})\.([0-9]{1,17})$")

log = logging.getLogger(__name__)


class RevocationList:
    """Writes revoked session ids to Redis for as long as their access tokens live.

    The database stays the source of truth for this service; Redis only lets the gateway
    refuse a revoked session's access token without calling us. Without REDIS_URL this
    is a no-op.
    """

    def __init__(self, redis_url: str | None, ttl_seconds: int) -> None:
        self._ttl = ttl_seconds
        self._redis = (
            redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
            if redis_url
            else None
        )

    def publish(self, session_ids: Iterable[str]) -> None:
        """Mark the sessions revoked; a Redis failure is logged, never raised."""
        if self._redis is None:
            return
        ids = list(session_ids)
        if not ids:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for sid in ids:
                pipe.set(REVOKED_SID_PREFIX + sid, b"1", ex=self._ttl)
            pipe.execute()
        except redis.RedisError as ex:
            log.warning("could not publish revoked sessions to redis: %s", type(ex).__name__)

    def ping(self) -> bool | None:
        """Whether Redis answers; None when no Redis is configured."""
        if self._redis is None:
            return None
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False


def revoke_user_sessions(
    db: DbSession, user_id: uuid.UUID, *, keep: uuid.UUID | None = None
) -> list[str]:
    """Revoke every live session of a user (but `keep`) in the caller's transaction."""
    query = select(Session.id).where(Session.user_id == user_id, Session.revoked_at.is_(None))
    if keep is not None:
        query = query.where(Session.id != keep)
    return _revoke_selected(db, query)


def revoke_client_sessions(db: DbSession, client_id: str) -> list[str]:
    """Revoke every live session an OAuth client's grants opened (the client is going)."""
    query = select(Session.id).where(Session.client_id == client_id, Session.revoked_at.is_(None))
    return _revoke_selected(db, query)


def _revoke_selected(db: DbSession, query: Select[Any]) -> list[str]:
    ids = list(db.scalars(query))
    if ids:
        now = utcnow()
        db.execute(
            update(Session)
            .where(Session.id.in_(ids), Session.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        _log_revocations(db, ids, now)
    return [str(sid) for sid in ids]


def revoke_session(db: DbSession, session_id: uuid.UUID) -> list[str]:
    """Revoke one session if it is still live; the ids actually revoked."""
    now = utcnow()
    done = rows_changed(
        db,
        update(Session)
        .where(Session.id == session_id, Session.revoked_at.is_(None))
        .values(revoked_at=now),
    )
    if not done:
        return []
    _log_revocations(db, [session_id], now)
    return [str(session_id)]


def _log_revocations(db: DbSession, session_ids: list[uuid.UUID], now: datetime) -> None:
    """Record the revocations for the gateway's feed, in the revoking transaction.

    SECURITY: every path that ends a session (logout, reuse detection, password change and
    reset, deactivation, deletion) comes through revoke_session / revoke_user_sessions, so
    none of them can skip the feed.
    """
    for sid in session_ids:
        # NOTE: two transactions may revoke one session at once (a password change while an
        # admin deactivates): the first row wins, the second insert is a no-op, not a 500.
        row = {"session_id": sid, "revoked_at": now}
        db.execute(insert_ignore(db, SessionRevocation, row))


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Where the gateway's next read of the feed starts (opaque to the gateway).

    `revoked_at`/`session_id` is the last row returned (rows are ordered by both, so ties
    in time page correctly); `floor` is the lowest horizon seen during a run of pages.
    """

    revoked_at: datetime
    session_id: uuid.UUID
    floor: datetime | None

    def encode(self) -> str:
        """`<micros>.<session hex>.<floor micros, 0 for none>`."""
        floor = _micros(self.floor) if self.floor is not None else 0
        return f"{_micros(self.revoked_at)}.{self.session_id.hex}.{floor}"

    @classmethod
    def decode(cls, text: str) -> FeedCursor:
        """Parse a cursor this service issued; anything else is InvalidCursor."""
        match = _CURSOR_RE.match(text)
        if match is None:
            raise errors.InvalidCursor("The cursor is malformed.", field="cursor")
        key, sid, floor = match.groups()
        # NOTE: 17 digits of microseconds stay far below datetime's year 9999.
        return cls(
            _from_micros(int(key)),
            uuid.UUID(hex=sid),
            _from_micros(int(floor)) if int(floor) else None,
        )


@dataclass(frozen=True, slots=True)
class RevokedPage:
    """One page of the feed: (session id, revoked at) pairs and the cursor to go on from."""

    items: list[tuple[uuid.UUID, datetime]]
    next_cursor: FeedCursor
    has_more: bool


class RevocationFeed:
    """Reads session_revocations for the gateway, safely against out-of-order commits.

    Why not "everything after the last row seen": a revocation's timestamp (and any id) is
    taken before its transaction commits, and PostgreSQL transactions commit in any order.
    A revocation stamped at T may become visible after one stamped at T+1 was read, and a
    cursor past T+1 would skip it forever. So once the gateway has caught up, its next
    cursor goes back to `now - FEED_OVERLAP` (the horizon): every revocation not yet
    visible now was stamped after the horizon (assumption: no revoking transaction takes
    longer than FEED_OVERLAP to commit), so the next read sees it. Rows seen twice are
    harmless: the gateway keeps a set. While paging through a backlog the cursor follows
    the last row, and remembers the lowest horizon of the run (`floor`) to go back to.
    """

    def __init__(self, sessions: sessionmaker[DbSession], access_ttl_seconds: int) -> None:
        self._sessions = sessions
        self._access_ttl = timedelta(seconds=access_ttl_seconds)
        self._purge_lock = threading.Lock()
        self._purged_at = 0.0

    @property
    def access_ttl(self) -> timedelta:
        """How long after its revocation a session's access tokens may still be presented."""
        return self._access_ttl

    def page(self, cursor: FeedCursor | None, limit: int) -> RevokedPage:
        """The revocations after `cursor` (None: every one whose tokens may still be live)."""
        now = utcnow()
        self._purge_now_and_then(now)
        horizon = now - FEED_OVERLAP
        if cursor is None:
            # Sessions revoked earlier have no access token left that has not expired.
            cursor = FeedCursor(now - self._access_ttl - FEED_OVERLAP, _NIL, None)
        after = and_(
            SessionRevocation.revoked_at == cursor.revoked_at,
            SessionRevocation.session_id > cursor.session_id,
        )
        with self._sessions() as db:
            rows = db.execute(
                select(SessionRevocation.session_id, SessionRevocation.revoked_at)
                .where(or_(SessionRevocation.revoked_at > cursor.revoked_at, after))
                .order_by(SessionRevocation.revoked_at, SessionRevocation.session_id)
                .limit(limit + 1)
            ).all()
        items = [(row[0], row[1]) for row in rows[:limit]]
        floor = min(cursor.floor, horizon) if cursor.floor is not None else horizon
        if len(rows) > limit:
            last_sid, last_at = items[-1]
            return RevokedPage(items, FeedCursor(last_at, last_sid, floor), has_more=True)
        return RevokedPage(items, FeedCursor(floor, _NIL, None), has_more=False)

    def _purge_now_and_then(self, now: datetime) -> None:
        """Drop rows whose sessions' access tokens have all expired (once a minute)."""
        moment = time.monotonic()
        if moment - self._purged_at < FEED_PURGE_INTERVAL_SECONDS:
            return
        if not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._purged_at = moment
            cutoff = now - self._access_ttl - 2 * FEED_OVERLAP
            with self._sessions.begin() as db:
                db.execute(delete(SessionRevocation).where(SessionRevocation.revoked_at < cutoff))
        finally:
            self._purge_lock.release()


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)
