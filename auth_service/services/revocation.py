"""Tells the gateway which sessions have ended, through a revoked-session list in Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

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
