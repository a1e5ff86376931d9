"""What the OAuth grants keep in the database: clients, pending sign-ins, codes, sessions.

An OAuth grant for a user opens a `sessions` row, so its refresh tokens rotate with reuse
detection and its revocation reaches the gateway exactly like a first-party login's.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service.db.models import (
    OAuthAuthorizationCode,
    OAuthClient,
    OAuthPendingAuthorization,
    RefreshToken,
    Session,
    User,
    utcnow,
)
from auth_service.db.session import rows_changed
from auth_service.security.opaque import new_token, token_hash
from auth_service.services.revocation import RevocationList, revoke_session
from auth_service.services.sessions import ClientInfo, open_session_row

# RFC 6749 §4.1.2 recommends at most 10 minutes; a relying party redeems at once.
CODE_TTL = timedelta(seconds=60)
# Time a person has for the sign-in, MFA and consent pages.
PENDING_TTL = timedelta(minutes=10)
# How long a code's row outlives its expiry: a replay within it still revokes what the
# code issued; later, the code is merely unknown (invalid_grant all the same).
CODE_RETENTION = timedelta(days=1)


@dataclass(frozen=True)
class AuthorizationRequest:
    """An authorization request Authlib has validated (scope resolved)."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str
    code_challenge_method: str

    def query(self) -> dict[str, str]:
        """The request as authorize query parameters (to validate it again at consent)."""
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "code_challenge": self.code_challenge,
            "code_challenge_method": self.code_challenge_method,
        }
        if self.state is not None:
            params["state"] = self.state
        if self.nonce is not None:
            params["nonce"] = self.nonce
        return params

    def columns(self) -> dict[str, str | None]:
        """The request as the columns a pending authorization and a code both keep."""
        return {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "nonce": self.nonce,
            "code_challenge": self.code_challenge,
            "code_challenge_method": self.code_challenge_method,
        }


@dataclass(frozen=True)
class SignedIn:
    """A user through the sign-in pages: how (amr) and when."""

    user_id: uuid.UUID
    amr: str
    auth_time: datetime


@dataclass(frozen=True)
class GrantedSession:
    """The user and the session an OAuth grant opened (or a refresh continues)."""

    user: User
    session: Session
    auth_time: datetime | None = None
    # The refresh token this grant rotated (refresh_token grant only).
    rotated_token_id: uuid.UUID | None = None


class OAuthStore:
    """Database work of the OAuth grants, each method one transaction."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        revocations: RevocationList,
        *,
        refresh_ttl: timedelta,
        reuse_grace: timedelta,
    ) -> None:
        self._sessions = sessions
        self._revocations = revocations
        self._refresh_ttl = refresh_ttl
        self._reuse_grace = reuse_grace

    # --- clients ------------------------------------------------------------------------

    def client(self, client_id: str) -> OAuthClient | None:
        """The registered client, detached (read-only)."""
        with self._sessions() as db:
            found = db.scalars(
                select(OAuthClient).where(OAuthClient.client_id == client_id)
            ).one_or_none()
            if found is not None:
                db.expunge(found)
            return found

    # --- the sign-in pages --------------------------------------------------------------

    def open_pending(self, request: AuthorizationRequest) -> tuple[str, str]:
        """A pending authorization: (browser cookie, CSRF token), both random, kept hashed."""
        browser, csrf = new_token(), new_token()
        with self._sessions.begin() as db:
            # NOTE: expired rows of abandoned sign-ins go when a new one starts.
            db.execute(
                delete(OAuthPendingAuthorization).where(
                    OAuthPendingAuthorization.expires_at <= utcnow()
                )
            )
            db.add(
                OAuthPendingAuthorization(
                    id=uuid.uuid4(),
                    browser_hash=token_hash(browser),
                    csrf_hash=token_hash(csrf),
                    state=request.state,
                    stage="sign_in",
                    expires_at=utcnow() + PENDING_TTL,
                    **request.columns(),
                )
            )
        return browser, csrf

    def pending(self, browser: str, csrf: str) -> OAuthPendingAuthorization | None:
        """The live pending authorization of this browser, if `csrf` is its token."""
        with self._sessions() as db:
            found = db.scalars(
                select(OAuthPendingAuthorization).where(
                    OAuthPendingAuthorization.browser_hash == token_hash(browser),
                    OAuthPendingAuthorization.expires_at > utcnow(),
                )
            ).one_or_none()
            if found is None:
                return None
            db.expunge(found)
        # SECURITY: constant-time comparison of the hashes (the token is 256 random bits).
        if not hmac.compare_digest(found.csrf_hash, token_hash(csrf)):
            return None
        return found

    def await_second_factor(self, pending_id: uuid.UUID, mfa_token: str) -> None:
        """The password was right; the MFA page must send back this flow's mfa_token."""
        with self._sessions.begin() as db:
            db.execute(
                update(OAuthPendingAuthorization)
                .where(OAuthPendingAuthorization.id == pending_id)
                .values(stage="mfa", mfa_token_hash=token_hash(mfa_token))
            )

    def signed_in(self, pending_id: uuid.UUID, user_id: uuid.UUID, amr: str) -> None:
        """The user is through sign-in (and MFA): on to consent."""
        with self._sessions.begin() as db:
            db.execute(
                update(OAuthPendingAuthorization)
                .where(OAuthPendingAuthorization.id == pending_id)
                .values(
                    stage="consent",
                    user_id=user_id,
                    amr=amr,
                    auth_time=utcnow(),
                    mfa_token_hash=None,
                )
            )

    def finish_pending(self, pending_id: uuid.UUID) -> bool:
        """Use the pending authorization up (one decision each); False if already used."""
        with self._sessions.begin() as db:
            return (
                rows_changed(
                    db,
                    delete(OAuthPendingAuthorization).where(
                        OAuthPendingAuthorization.id == pending_id
                    ),
                )
                == 1
            )

    # --- authorization codes ------------------------------------------------------------

    def save_code(self, code: str, request: AuthorizationRequest, signed_in: SignedIn) -> None:
        """Keep a fresh code's hash with everything it is bound to."""
        with self._sessions.begin() as db:
            db.execute(
                delete(OAuthAuthorizationCode).where(
                    OAuthAuthorizationCode.expires_at <= utcnow() - CODE_RETENTION
                )
            )
            db.add(
                OAuthAuthorizationCode(
                    id=uuid.uuid4(),
                    code_hash=token_hash(code),
                    user_id=signed_in.user_id,
                    amr=signed_in.amr,
                    auth_time=signed_in.auth_time,
                    expires_at=utcnow() + CODE_TTL,
                    **request.columns(),
                )
            )

    def nonce_used(self, client_id: str, nonce: str) -> bool:
        """Whether a code of this client already carried this nonce (a replayed request)."""
        with self._sessions() as db:
            return bool(
                db.scalar(
                    select(
                        exists().where(
                            OAuthAuthorizationCode.client_id == client_id,
                            OAuthAuthorizationCode.nonce == nonce,
                        )
                    )
                )
            )

    def code(self, code: str, client_id: str) -> OAuthAuthorizationCode | None:
        """An unused, unexpired code of this client.

        SECURITY: a code presented a second time revokes the session its first
        redemption opened, and every token of it (RFC 6749 §4.1.2).
        """
        with self._sessions.begin() as db:
            found = db.scalars(
                select(OAuthAuthorizationCode).where(
                    OAuthAuthorizationCode.code_hash == token_hash(code),
                    OAuthAuthorizationCode.client_id == client_id,
                )
            ).one_or_none()
            if found is None:
                return None
            if found.used_at is not None:
                revoked = revoke_session(db, found.session_id) if found.session_id else []
            else:
                db.expunge(found)
                return found if found.expires_at > utcnow() else None
        self._revocations.publish(revoked)
        return None

    def redeem_code(
        self, code: OAuthAuthorizationCode, client: ClientInfo
    ) -> GrantedSession | None:
        """Claim the code (exactly one redemption wins) and open its session."""
        now = utcnow()
        with self._sessions.begin() as db:
            claimed = rows_changed(
                db,
                update(OAuthAuthorizationCode)
                .where(
                    OAuthAuthorizationCode.id == code.id,
                    OAuthAuthorizationCode.used_at.is_(None),
                    OAuthAuthorizationCode.expires_at > now,
                )
                .values(used_at=now),
            )
            user = db.get(User, code.user_id)
            if claimed != 1 or user is None or not user.is_active:
                return None
            session = open_session_row(
                db, user.id, client, code.amr, client_id=code.client_id, scope=code.scope
            )
            db.execute(
                update(OAuthAuthorizationCode)
                .where(OAuthAuthorizationCode.id == code.id)
                .values(session_id=session.id)
            )
            db.expunge_all()
        return GrantedSession(user=user, session=session, auth_time=code.auth_time)

    # --- refresh tokens -----------------------------------------------------------------

    def rotate_refresh_token(self, presented: str, client_id: str) -> GrantedSession | None:
        """Claim a refresh token of this client's live session (one use wins).

        SECURITY: a rotated token presented again after the grace window means it leaked:
        the whole session ends (the same rule as our own refresh, services/sessions.py).
        """
        now = utcnow()
        with self._sessions.begin() as db:
            found = db.execute(
                select(RefreshToken, Session, User)
                .join(Session, RefreshToken.session_id == Session.id)
                .join(User, RefreshToken.user_id == User.id)
                .where(
                    RefreshToken.token_hash == token_hash(presented),
                    Session.client_id == client_id,
                )
            ).one_or_none()
            if found is None:
                return None
            token, session, user = found
            if session.revoked_at is not None or token.expires_at <= now or not user.is_active:
                return None
            claimed = rows_changed(
                db,
                update(RefreshToken)
                .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
                .values(used_at=now),
            )
            if claimed == 1:
                session.last_used_at = now
                db.flush()
                db.expunge_all()
                return GrantedSession(user=user, session=session, rotated_token_id=token.id)
            used_at = db.scalar(select(RefreshToken.used_at).where(RefreshToken.id == token.id))
            if used_at is not None and now - used_at < self._reuse_grace:
                return None  # NOTE: a benign race: the winner rotated it moments ago.
            revoked = revoke_session(db, session.id)
        self._revocations.publish(revoked)
        return None

    def add_refresh_token(self, granted: GrantedSession, token: str, client: ClientInfo) -> None:
        """Keep a new refresh token of the grant's session (linked from the one it replaced)."""
        with self._sessions.begin() as db:
            row = RefreshToken(
                id=uuid.uuid4(),
                token_hash=token_hash(token),
                session_id=granted.session.id,
                user_id=granted.user.id,
                expires_at=utcnow() + self._refresh_ttl,
                user_agent=client.user_agent,
                ip_address=client.ip_address,
            )
            db.add(row)
            db.flush()
            if granted.rotated_token_id is not None:
                db.execute(
                    update(RefreshToken)
                    .where(RefreshToken.id == granted.rotated_token_id)
                    .values(replaced_by_id=row.id)
                )

    def refresh_token_session(self, presented: str) -> tuple[RefreshToken, Session] | None:
        """The refresh token and its OAuth session (for introspection and revocation)."""
        with self._sessions() as db:
            found = db.execute(
                select(RefreshToken, Session)
                .join(Session, RefreshToken.session_id == Session.id)
                .where(
                    RefreshToken.token_hash == token_hash(presented),
                    Session.client_id.is_not(None),
                )
            ).one_or_none()
            if found is None:
                return None
            db.expunge_all()
            return found[0], found[1]

    def live_session(self, session_id: str) -> Session | None:
        """The session if it has not ended (None for a malformed id)."""
        try:
            sid = uuid.UUID(session_id)
        except ValueError:
            return None
        with self._sessions() as db:
            found = db.scalars(
                select(Session).where(Session.id == sid, Session.revoked_at.is_(None))
            ).one_or_none()
            if found is not None:
                db.expunge(found)
            return found

    def user(self, user_id: str) -> User | None:
        """An active user by id (None for a malformed id)."""
        try:
            uid = uuid.UUID(user_id)
        except ValueError:
            return None
        with self._sessions() as db:
            found = db.get(User, uid)
            if found is None or not found.is_active:
                return None
            db.expunge(found)
            return found

    def end_session(self, session_id: uuid.UUID) -> None:
        """Revoke a grant's session: its refresh tokens and access tokens stop working."""
        with self._sessions.begin() as db:
            revoked = revoke_session(db, session_id)
        self._revocations.publish(revoked)
