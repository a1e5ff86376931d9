"""Email verification: a single-use token, mailed to the address, proves the user owns it.

Tokens are stored hashed, live 24 hours and prove the address they were mailed to only:
after an address change the older tokens verify nothing. Every mail goes through the
outbox in the caller's transaction (services/outbox.py), so a token exists if and only if
its mail does.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import EmailVerificationToken, User, utcnow
from auth_service.db.session import rows_changed
from auth_service.security.opaque import new_token, token_hash
from auth_service.services import audit, outbox
from auth_service.services.audit import ClientInfo, EventType

VERIFICATION_TOKEN_TTL = timedelta(hours=24)
VERIFY_SUBJECT = "Verify your email address"
SIGN_UP_ATTEMPT_SUBJECT = "Someone tried to sign up with your email address"
_INVALID = "The verification token is invalid, expired or used."


class EmailVerificationService:
    """Mails verification links and redeems their tokens exactly once."""

    def __init__(
        self,
        mail_sessions: sessionmaker[DbSession],
        *,
        verify_url: str,
        doorbell: threading.Event | None = None,
    ) -> None:
        # SECURITY: the mails hold live links in clear: every transaction here runs on the
        # engine that never logs its parameters (see build_services).
        self._sessions = mail_sessions
        self._verify_url = verify_url
        self._doorbell = doorbell or threading.Event()

    def issue(self, db: DbSession, user: User) -> None:
        """Mail a fresh link to the user's current address, in `db`'s transaction.

        The user's earlier unused tokens die: only the newest link works.
        """
        db.execute(
            delete(EmailVerificationToken).where(
                EmailVerificationToken.user_id == user.id,
                EmailVerificationToken.used_at.is_(None),
            )
        )
        token = new_token()
        db.add(
            EmailVerificationToken(
                id=uuid.uuid4(),
                token_hash=token_hash(token),
                user_id=user.id,
                email=user.email,
                expires_at=utcnow() + VERIFICATION_TOKEN_TTL,
            )
        )
        # SECURITY: the link base comes from configuration, never from the Host header.
        link = f"{self._verify_url}?{urlencode({'token': token})}"
        outbox.enqueue(
            db,
            to=user.email,
            subject=VERIFY_SUBJECT,
            body=(
                "Please confirm that this is your email address.\n\n"
                f"To verify it, open:\n{link}\n\n"
                "The link works once and expires in 24 hours. If you did not ask for an "
                "account, ignore this mail."
            ),
        )

    def warn_owner(self, email: str) -> None:
        """Someone tried to register `email` (stored form), which has an account: tell its owner.

        An owner who never verified gets a fresh verification link instead: with
        REQUIRE_EMAIL_VERIFICATION on they cannot sign in to ask for one.
        """
        with self._sessions.begin() as db:
            user = db.scalars(select(User).where(User.email == email)).one_or_none()
            if user is None:
                return  # NOTE: deleted since the sign-up collided with it
            if not user.email_verified:
                self.issue(db, user)
            else:
                outbox.enqueue(
                    db,
                    to=user.email,
                    subject=SIGN_UP_ATTEMPT_SUBJECT,
                    body=(
                        "Someone tried to create an account with this email address, which "
                        "already has one. Nothing was changed.\n\n"
                        "If it was you, sign in instead (or reset your password). If not, "
                        "you can ignore this mail."
                    ),
                )
        self.ring()

    def resend(self, user_id: uuid.UUID) -> bool:
        """Mail a new link if the user's address is still unverified; whether one was sent."""
        with self._sessions.begin() as db:
            user = db.scalars(
                select(User).where(User.id == user_id).with_for_update()
            ).one_or_none()
            if user is None or user.email_verified:
                return False
            self.issue(db, user)
        self.ring()
        return True

    def verify(self, token: str, origin: ClientInfo | None = None) -> None:
        """Spend the token and mark its address verified; InvalidVerificationToken otherwise."""
        now = utcnow()
        with self._sessions.begin() as db:
            row = db.scalars(
                select(EmailVerificationToken).where(
                    EmailVerificationToken.token_hash == token_hash(token)
                )
            ).one_or_none()
            if row is None or row.used_at is not None or row.expires_at <= now:
                raise errors.InvalidVerificationToken(_INVALID)
            # NOTE: the conditional UPDATE makes a token single-use under concurrency too.
            spent = rows_changed(
                db,
                update(EmailVerificationToken)
                .where(
                    EmailVerificationToken.id == row.id,
                    EmailVerificationToken.used_at.is_(None),
                )
                .values(used_at=now),
            )
            # SECURITY: the token proves the address it was mailed to, not whatever the
            # account's address is now.
            verified = rows_changed(
                db,
                update(User)
                .where(User.id == row.user_id, User.email == row.email)
                .values(email_verified=True),
            )
            if spent == 0 or verified == 0:
                raise errors.InvalidVerificationToken(_INVALID)
            audit.record(
                db,
                EventType.EMAIL_VERIFIED,
                actor_id=row.user_id,
                user_id=row.user_id,
                origin=origin,
            )

    def ring(self) -> None:
        """Wake this process's mail sender: a mail was just committed to the outbox."""
        self._doorbell.set()
