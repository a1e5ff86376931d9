"""Password reset by emailed single-use token; answers never reveal whether an account exists."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import PasswordResetRequest, PasswordResetToken, User, utcnow
from auth_service.db.session import rows_changed
from auth_service.security.opaque import new_token, token_hash
from auth_service.security.passwords import PasswordHasher
from auth_service.services import audit, outbox
from auth_service.services.accounts import hash_password
from auth_service.services.audit import ClientInfo, EventType
from auth_service.services.emails import lookup_email
from auth_service.services.revocation import RevocationList, revoke_user_sessions
from auth_service.services.throttle import clear_account

# Requests read per query while resolving the queue.
REQUEST_BATCH = 100


class PasswordResetService:
    """Mails reset links (through the outbox) and redeems their tokens exactly once."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        hasher: PasswordHasher,
        revocations: RevocationList,
        *,
        mail_sessions: sessionmaker[DbSession],
        reset_url: str,
        token_ttl: timedelta,
        doorbell: threading.Event | None = None,
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._revocations = revocations
        # Resolving requests writes links into the outbox: see build_services.
        self._mail_sessions = mail_sessions
        self._reset_url = reset_url
        self._token_ttl = token_ttl
        self._doorbell = doorbell or threading.Event()

    def request(self, email: str) -> None:
        """Queue a reset request; the mail sender resolves it later (`process_requests`).

        SECURITY: the same work for every email (one insert and commit, never a look-up),
        so neither the answer nor its timing says whether an account exists.
        """
        with self._sessions.begin() as db:
            db.add(PasswordResetRequest(id=uuid.uuid4(), email=lookup_email(email)))
        self._doorbell.set()

    def process_requests(self) -> int:
        """Resolve queued requests: a token and its mail for each active account; count them."""
        resolved = 0
        while queued := self._queued():
            resolved += sum(self._process(request_id) for request_id in queued)
        return resolved

    def _queued(self) -> list[uuid.UUID]:
        with self._mail_sessions() as db:
            return list(
                db.scalars(
                    select(PasswordResetRequest.id)
                    .order_by(PasswordResetRequest.created_at)
                    .limit(REQUEST_BATCH)
                )
            )

    def confirm(self, token: str, new_password: str, origin: ClientInfo | None = None) -> None:
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
            audit.record(
                db,
                EventType.PASSWORD_RESET,
                actor_id=row.user_id,
                user_id=row.user_id,
                origin=origin,
                details={"sessions_revoked": len(revoked)},
            )
        self._revocations.publish(revoked)

    def _process(self, request_id: uuid.UUID) -> bool:
        """Resolve one request; the token and its mail commit together or not at all."""
        with self._mail_sessions.begin() as db:
            email = db.scalar(
                select(PasswordResetRequest.email).where(PasswordResetRequest.id == request_id)
            )
            # NOTE: the DELETE decides which of several senders resolves the request.
            taken = rows_changed(
                db, delete(PasswordResetRequest).where(PasswordResetRequest.id == request_id)
            )
            if email is None or taken == 0:
                return False
            user = db.scalars(
                select(User).where(User.email == email, User.is_active.is_(True))
            ).one_or_none()
            if user is None:
                return False
            token = new_token()
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
            outbox.enqueue(
                db,
                to=user.email,
                subject="Reset your password",
                body=(
                    "Someone asked to reset the password of this account.\n\n"
                    f"To choose a new password, open:\n{link}\n\n"
                    "If it was not you, ignore this mail; the link expires soon."
                ),
            )
        return True
