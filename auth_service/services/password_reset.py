"""Password reset by emailed single-use token; answers never reveal whether an account exists."""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import PasswordResetToken, User, utcnow
from auth_service.db.session import rows_changed
from auth_service.security.opaque import new_token, token_hash
from auth_service.security.passwords import PasswordHasher
from auth_service.services.accounts import hash_password
from auth_service.services.emails import lookup_email
from auth_service.services.mailer import Mailer
from auth_service.services.revocation import RevocationList, revoke_user_sessions
from auth_service.services.throttle import clear_account

log = logging.getLogger(__name__)


class PasswordResetService:
    """Mails reset links and redeems their tokens exactly once."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        hasher: PasswordHasher,
        mailer: Mailer,
        revocations: RevocationList,
        *,
        reset_url: str,
        token_ttl: timedelta,
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._mailer = mailer
        self._revocations = revocations
        self._reset_url = reset_url
        self._token_ttl = token_ttl
        # NOTE: mail goes out off the request thread, so an existing account does not
        # answer measurably slower than an unknown email.
        self._outbox = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mail")

    def request(self, email: str) -> None:
        """Mail a reset link if an active account has this email; otherwise do nothing."""
        email = lookup_email(email)
        token = new_token()
        with self._sessions.begin() as db:
            user = db.scalars(
                select(User).where(User.email == email, User.is_active.is_(True))
            ).one_or_none()
            if user is None:
                return
            db.add(
                PasswordResetToken(
                    id=uuid.uuid4(),
                    token_hash=token_hash(token),
                    user_id=user.id,
                    expires_at=utcnow() + self._token_ttl,
                )
            )
        # SECURITY: the link base comes from configuration, never from the Host header.
        link = f"{self._reset_url}?{urlencode({'token': token})}"
        self._outbox.submit(self._send, email, link)

    def confirm(self, token: str, new_password: str) -> None:
        """Set the new password; the token is spent, every session and login throttle ends."""
        hashed = hash_password(self._hasher, new_password, field="new_password")
        now = utcnow()
        with self._sessions.begin() as db:
            row = db.scalars(
                select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash(token))
            ).one_or_none()
            if row is None or row.used_at is not None or row.expires_at <= now:
                raise errors.InvalidResetToken("The reset token is invalid, expired or used.")
            # NOTE: the conditional UPDATE makes a token single-use under concurrency too.
            spent = rows_changed(
                db,
                update(PasswordResetToken)
                .where(
                    PasswordResetToken.user_id == row.user_id,
                    PasswordResetToken.used_at.is_(None),
                )
                .values(used_at=now),
            )
            if spent == 0:
                raise errors.InvalidResetToken("The reset token is invalid, expired or used.")
            db.execute(update(User).where(User.id == row.user_id).values(hashed_password=hashed))
            revoked = revoke_user_sessions(db, row.user_id)
            # SECURITY: whoever redeems the mailed token controls the mailbox: the owner.
            # Their login throttles (every address and the ceiling) end with the old password.
            clear_account(db, row.user.email)
        self._revocations.publish(revoked)

    def _send(self, email: str, link: str) -> None:
        try:
            self._mailer.send(
                to=email,
                subject="Reset your password",
                body=(
                    "Someone asked to reset the password of this account.\n\n"
                    f"To choose a new password, open:\n{link}\n\n"
                    "If it was not you, ignore this mail; the link expires soon."
                ),
            )
        except Exception as ex:
            log.error("password reset mail failed: %s", type(ex).__name__)
