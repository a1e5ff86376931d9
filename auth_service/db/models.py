"""ORM models: users, login sessions, refresh tokens, password-reset tokens, login throttles."""

import uuid
from datetime import datetime
from typing import Annotated

from sqlalchemy import ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from auth_service.db.base import Base, UTCDateTime, utcnow

__all__ = [
    "Base",
    "LoginThrottle",
    "PasswordResetToken",
    "RefreshToken",
    "Session",
    "SessionRevocation",
    "User",
    "utcnow",
]

# Column aliases (warehouse style): one definition of each recurring column shape.
uuid_pk = Annotated[uuid.UUID, mapped_column(Uuid, primary_key=True, default=uuid.uuid4)]
timestamp = Annotated[datetime, mapped_column(UTCDateTime)]
created_ts = Annotated[datetime, mapped_column(UTCDateTime, default=utcnow)]
token_hash = Annotated[str, mapped_column(String(64), unique=True)]  # hex SHA-256, never the token
user_agent = Annotated[str | None, mapped_column(String(512))]
ip_address = Annotated[str | None, mapped_column(String(45))]  # fits an IPv6 text form


def _user_fk() -> Mapped[uuid.UUID]:
    """Return an indexed users.id foreign key that is deleted with its user."""
    return mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True)


class User(Base):
    """An account; `email` is stored normalised (trimmed, lower-cased)."""

    __tablename__ = "users"

    id: Mapped[uuid_pk]
    email: Mapped[str] = mapped_column(String(254), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    is_superuser: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[created_ts]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def role(self) -> str:
        """Return the access-token role claim for this user."""
        return "admin" if self.is_superuser else "user"


class Session(Base):
    """One login: a refresh-token family; its id is the access token's `sid` claim."""

    __tablename__ = "sessions"

    id: Mapped[uuid_pk]
    user_id: Mapped[uuid.UUID] = _user_fk()
    created_at: Mapped[created_ts]
    revoked_at: Mapped[timestamp | None]
    user_agent: Mapped[user_agent]
    ip_address: Mapped[ip_address]

    user: Mapped[User] = relationship()


class SessionRevocation(Base):
    """A revoked session, for the gateway's revocation feed (GET /internal/v1/revoked-sessions).

    Its own table, without a foreign key: deleting a user deletes their sessions, and the
    gateway must still learn that those sessions ended. Rows are useless once the session's
    access tokens have expired and are purged then.
    """

    __tablename__ = "session_revocations"

    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class RefreshToken(Base):
    """One refresh token of a session; rotation marks it used and links its replacement."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid_pk]
    token_hash: Mapped[token_hash]
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = _user_fk()
    created_at: Mapped[created_ts]
    expires_at: Mapped[timestamp]
    used_at: Mapped[timestamp | None]
    # SET NULL: deleting a newer token (e.g. by cleanup) must not delete the older one.
    replaced_by_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("refresh_tokens.id", ondelete="SET NULL")
    )
    user_agent: Mapped[user_agent]
    ip_address: Mapped[ip_address]

    session: Mapped[Session] = relationship()


class PasswordResetToken(Base):
    """A single-use password-reset token, stored hashed."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[uuid_pk]
    token_hash: Mapped[token_hash]
    user_id: Mapped[uuid.UUID] = _user_fk()
    created_at: Mapped[created_ts]
    expires_at: Mapped[timestamp]
    used_at: Mapped[timestamp | None]

    user: Mapped[User] = relationship()


class LoginThrottle(Base):
    """Failed-login counter per email, keyed by the email's hash so unknown emails stay private."""

    __tablename__ = "login_throttles"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[created_ts]
    locked_until: Mapped[timestamp | None]
