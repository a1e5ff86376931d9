"""ORM models: users, sessions, refresh tokens, resets, throttles, mail, MFA, OAuth clients."""

import uuid
from datetime import datetime
from typing import Annotated

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from auth_service.db.base import Base, UTCDateTime, utcnow

__all__ = [
    "Base",
    "LoginThrottle",
    "MailOutbox",
    "MfaChallenge",
    "OAuthAuthorizationCode",
    "OAuthClient",
    "OAuthPendingAuthorization",
    "PasswordResetRequest",
    "PasswordResetToken",
    "RecoveryCode",
    "RefreshToken",
    "Session",
    "SessionRevocation",
    "TotpCredential",
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
    """An account; `email` is stored normalised (trimmed, lower-cased, IDNA domain)."""

    __tablename__ = "users"

    id: Mapped[uuid_pk]
    email: Mapped[str] = mapped_column(String(254), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    is_superuser: Mapped[bool] = mapped_column(default=False)
    # NOTE: kept on the user (not derived from totp_credentials) so login reads one row.
    mfa_enabled: Mapped[bool] = mapped_column(default=False, server_default=false())
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
    # Set at login and at each refresh (not per request: that would be a write per call).
    last_used_at: Mapped[timestamp | None]
    revoked_at: Mapped[timestamp | None]
    user_agent: Mapped[user_agent]
    ip_address: Mapped[ip_address]
    # The access tokens' `amr` claim (RFC 8176), space-separated: "pwd" or "pwd otp".
    amr: Mapped[str] = mapped_column(String(64), default="pwd", server_default="pwd")
    # The OAuth client this session was granted to, and the granted scope (space-separated);
    # NULL for our own logins.
    client_id: Mapped[str | None] = mapped_column(String(64))
    scope: Mapped[str | None] = mapped_column(Text)

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


class PasswordResetRequest(Base):
    """A reset asked for by email, not yet looked at: the request path's only write.

    NOTE: every email, known or not, costs the same one insert here; the background
    sender resolves the account later and deletes the row (services/password_reset.py).
    """

    __tablename__ = "password_reset_requests"

    id: Mapped[uuid_pk]
    # NOTE: unbounded: lower-casing can lengthen a 254-character address (e.g. "İ"), and
    # an unknown email must never fail here where a known one would not.
    email: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class MailOutbox(Base):
    """One outgoing mail, delivered by the outbox sender with retries (services/outbox.py).

    `next_attempt_at` is NULL once nothing is left to do (sent, or failed for good); while
    a sender holds the row it is that sender's lease.
    """

    __tablename__ = "mail_outbox"

    id: Mapped[uuid_pk]
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[created_ts]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, default=utcnow, index=True
    )
    sent_at: Mapped[timestamp | None]
    failed_at: Mapped[timestamp | None]
    last_error: Mapped[str | None] = mapped_column(String(255))


class LoginThrottle(Base):
    """A failed-login counter: one row per (email, client address), one per email (the ceiling).

    Only hashes are kept, so emails of non-users and client addresses never appear in clear.
    `account_hash` (the email's hash) is on every row of an email, so a completed reset or
    an admin can clear all of them at once.
    """

    __tablename__ = "login_throttles"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_hash: Mapped[str] = mapped_column(String(64), index=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[created_ts]
    locked_until: Mapped[timestamp | None]


class TotpCredential(Base):
    """A user's TOTP secret (Fernet-encrypted); pending until `confirmed_at` is set."""

    __tablename__ = "totp_credentials"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_encrypted: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[created_ts]
    confirmed_at: Mapped[timestamp | None]
    # SECURITY: the last accepted time step; a code of this step or an earlier one is a
    # replay (RFC 6238 §5.2).
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)


class RecoveryCode(Base):
    """A single-use recovery code, stored as a SHA-256 hash (the codes carry 80 random bits)."""

    __tablename__ = "recovery_codes"

    id: Mapped[uuid_pk]
    user_id: Mapped[uuid.UUID] = _user_fk()
    code_hash: Mapped[token_hash]
    created_at: Mapped[created_ts]
    used_at: Mapped[timestamp | None]


class MfaChallenge(Base):
    """The second step of a login: issued after a correct password, single use, short-lived."""

    __tablename__ = "mfa_challenges"

    id: Mapped[uuid_pk]
    token_hash: Mapped[token_hash]
    user_id: Mapped[uuid.UUID] = _user_fk()
    created_at: Mapped[created_ts]
    expires_at: Mapped[timestamp]
    used_at: Mapped[timestamp | None]
    attempts: Mapped[int] = mapped_column(default=0)


class OAuthClient(Base):
    """An application that signs its users in with us (OAuth 2.0 / OpenID Connect).

    `client_id` is public; a confidential client's secret is shown once at creation and
    kept as a SHA-256 hash (it carries 256 random bits, so a slow hash adds nothing).
    Redirect URIs are matched exactly (RFC 9700 §2.1).
    """

    __tablename__ = "oauth_clients"

    id: Mapped[uuid_pk]
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    # NULL for a public client (client_type "public"): it has no secret and must use PKCE.
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    client_type: Mapped[str] = mapped_column(String(16))  # "confidential" or "public"
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)  # the most this client may ask for
    created_at: Mapped[created_ts]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class _AuthorizationRequest:
    """The validated authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, OIDC nonce)."""

    client_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)  # space-separated
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))


class OAuthPendingAuthorization(_AuthorizationRequest, Base):
    """A browser between GET /oauth/authorize and its consent: sign-in, MFA, consent.

    The browser holds a random cookie (`browser_hash` is its hash); every form carries a
    CSRF token whose hash is `csrf_hash`. `stage` is "sign_in", "mfa" or "consent";
    `user_id`, `amr` and `auth_time` are set once the user has signed in.
    """

    __tablename__ = "oauth_pending_authorizations"

    id: Mapped[uuid_pk]
    browser_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE")
    )
    # The MFA step's mfa_token (its hash): the MFA form must send the one this flow got.
    mfa_token_hash: Mapped[str | None] = mapped_column(String(64))
    amr: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[timestamp | None]
    created_at: Mapped[created_ts]
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class OAuthAuthorizationCode(_AuthorizationRequest, Base):
    """An authorization code: stored hashed, single use, short-lived, bound to its request.

    `session_id` is the session its redemption opened: a second redemption revokes it
    (RFC 6749 §4.1.2). No foreign key, so the link outlives a cleaned-up session.
    """

    __tablename__ = "oauth_authorization_codes"

    id: Mapped[uuid_pk]
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = _user_fk()
    amr: Mapped[str] = mapped_column(String(64))
    auth_time: Mapped[timestamp]
    created_at: Mapped[created_ts]
    expires_at: Mapped[timestamp]
    used_at: Mapped[timestamp | None]
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
