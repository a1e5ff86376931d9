"""Ending sessions: in the database (the source of truth) and in Redis for the gateway."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from auth_service.db.models import Session, utcnow
from auth_service.db.session import rows_changed

REVOKED_SID_PREFIX = "authgate:revoked-sid:"

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
    ids = list(db.scalars(query))
    if ids:
        db.execute(update(Session).where(Session.id.in_(ids)).values(revoked_at=utcnow()))
    return [str(sid) for sid in ids]


def revoke_session(db: DbSession, session_id: uuid.UUID) -> list[str]:
    """Revoke one session if it is still live; the ids actually revoked."""
    done = rows_changed(
        db,
        update(Session)
        .where(Session.id == session_id, Session.revoked_at.is_(None))
        .values(revoked_at=utcnow()),
    )
    return [str(session_id)] if done else []
