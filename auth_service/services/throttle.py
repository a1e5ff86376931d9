"""Per-account login throttling, for known and unknown emails alike."""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service.db.models import LoginThrottle, utcnow
from auth_service.db.upsert import insert_ignore
from auth_service.errors import LoginThrottled
from auth_service.security.opaque import token_hash


def email_key(email: str) -> str:
    """The throttle key: a hash, so emails of non-users are never stored in clear."""
    return token_hash(email)


class LoginThrottler:
    """Counts failed logins per email; after `max_failures` in a window, refuses for a while."""

    def __init__(
        self, sessions: sessionmaker[DbSession], *, max_failures: int, lockout_seconds: int
    ) -> None:
        self._sessions = sessions
        self._max_failures = max_failures
        self._lockout = timedelta(seconds=lockout_seconds)

    def check(self, email: str) -> None:
        """Raise LoginThrottled while the email is locked out."""
        with self._sessions() as db:
            locked_until = db.scalar(
                select(LoginThrottle.locked_until).where(
                    LoginThrottle.email_hash == email_key(email)
                )
            )
        now = utcnow()
        if locked_until is not None and locked_until > now:
            raise LoginThrottled(retry_after=math.ceil((locked_until - now).total_seconds()))

    def record_failure(self, email: str) -> None:
        """Count one failure, starting a new window when the old one has passed."""
        key = email_key(email)
        now = utcnow()
        with self._sessions.begin() as db:
            # NOTE: inserting first takes the write lock (SQLite) or the row (PostgreSQL),
            # so concurrent failures for one email are counted, not lost.
            db.execute(
                insert_ignore(
                    db, LoginThrottle, {"email_hash": key, "failures": 0, "window_started_at": now}
                )
            )
            row = db.scalars(
                select(LoginThrottle).where(LoginThrottle.email_hash == key).with_for_update()
            ).one()
            if now - row.window_started_at > self._lockout:
                row.failures = 0
                row.window_started_at = now
                row.locked_until = None
            row.failures += 1
            if row.failures >= self._max_failures:
                row.locked_until = now + self._lockout

    def reset(self, db: DbSession, email: str) -> None:
        """Forget the failures after a successful login, in the caller's transaction."""
        db.execute(delete(LoginThrottle).where(LoginThrottle.email_hash == email_key(email)))
