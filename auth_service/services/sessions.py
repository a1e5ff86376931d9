"""Login sessions: sign-in, refresh-token rotation with reuse detection, logout, revocation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import RefreshToken, Session, User, utcnow
from auth_service.db.session import rows_changed
from auth_service.security.opaque import new_token, token_hash
from auth_service.security.passwords import PasswordHasher, PasswordTooLongError
from auth_service.security.tokens import KeyRing
from auth_service.services import audit
from auth_service.services.audit import ClientInfo as ClientInfo  # NOTE: re-exported
from auth_service.services.audit import EventType
from auth_service.services.emails import lookup_email
from auth_service.services.mfa import MfaService
from auth_service.services.revocation import RevocationList, revoke_session, revoke_user_sessions
from auth_service.services.throttle import LoginThrottler

PASSWORD_AMR = ("pwd",)
MFA_AMR = ("pwd", "otp")
# The sessions list is bounded (the spec's maxItems); the newest are the ones that matter.
MAX_LISTED_SESSIONS = 100
# What a successful password step gives: a session's tokens, or just the user.
_SignedIn = TypeVar("_SignedIn")


class SessionEvents(Protocol):
    """Where sign-in and refresh outcomes are counted (the app's metrics)."""

    def login(self, outcome: str) -> None:
        """One login: success, bad_credentials, inactive or throttled."""

    def refresh(self, outcome: str) -> None:
        """One refresh: rotated, race, reuse or invalid."""


class _Uncounted:
    def login(self, outcome: str) -> None:
        pass

    def refresh(self, outcome: str) -> None:
        pass


class RefreshTokenReused(errors.InvalidRefreshToken):
    """A rotated token presented after the grace window; the client sees any other 401."""


_LOGIN_OUTCOMES: dict[type[errors.DomainError], str] = {
    errors.InvalidCredentials: "bad_credentials",
    errors.InactiveUser: "inactive",
    errors.EmailNotVerified: "unverified",
    errors.LoginThrottled: "throttled",
    errors.MfaRequired: "mfa_required",
    errors.InvalidMfaToken: "bad_second_factor",
    errors.InvalidMfaCode: "bad_second_factor",
}


@dataclass(frozen=True)
class TokenPair:
    """What a successful login or refresh returns."""

    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class TokenPolicy:
    """Lifetimes and claims of the tokens this service issues."""

    issuer: str
    audience: str
    access_ttl_seconds: int
    refresh_ttl: timedelta
    reuse_grace: timedelta


@dataclass(frozen=True)
class SessionInfo:
    """One live session as its owner (or an admin) sees it."""

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime
    user_agent: str | None
    ip_address: str | None
    current: bool


class SessionService:
    """Issues token pairs and keeps each session's refresh-token family honest."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        hasher: PasswordHasher,
        key_ring: KeyRing,
        policy: TokenPolicy,
        revocations: RevocationList,
        throttler: LoginThrottler,
        mfa: MfaService,
        events: SessionEvents | None = None,
        *,
        require_verification: bool = False,
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._key_ring = key_ring
        self._policy = policy
        self._revocations = revocations
        self._throttler = throttler
        self._mfa = mfa
        self._events = events or _Uncounted()
        self._require_verification = require_verification

    def login(self, email: str, password: str, client: ClientInfo) -> TokenPair:
        """Check the credentials and open a session; every failure looks the same."""
        with self._counted_login():
            return self._login(
                email,
                password,
                client,
                lambda db, user: self._open_session(db, user, client, PASSWORD_AMR),
            )

    def authenticate(self, email: str, password: str, client: ClientInfo) -> User:
        """The password step of another sign-in (the OAuth pages): the same checks,
        throttle and MfaRequired as login, but no session is opened here."""
        with self._counted_login():
            return self._login(
                email,
                password,
                client,
                lambda db, user: _signed_in_elsewhere(db, user, client, PASSWORD_AMR),
            )

    def authenticate_mfa(self, mfa_token: str, code: str, client: ClientInfo) -> User:
        """The second step of another sign-in: login_mfa without opening a session."""
        with self._counted_login():
            user = self._mfa.redeem(mfa_token, code, client)
            self._check_verified(user)
            with self._sessions.begin() as db:
                self._throttler.forget_address(db, user.email, client.ip_address)
                return _signed_in_elsewhere(db, user, client, MFA_AMR)

    def login_mfa(self, mfa_token: str, code: str, client: ClientInfo) -> TokenPair:
        """The login's second step: a TOTP or recovery code for the user of `mfa_token`."""
        with self._counted_login():
            user = self._mfa.redeem(mfa_token, code, client)
            # NOTE: checked at the password step too; the address may have changed since.
            self._check_verified(user)
            with self._sessions.begin() as db:
                self._throttler.forget_address(db, user.email, client.ip_address)
                return self._open_session(db, user, client, MFA_AMR)

    @contextmanager
    def _counted_login(self) -> Iterator[None]:
        try:
            yield
        except errors.DomainError as ex:
            if type(ex) in _LOGIN_OUTCOMES:
                self._events.login(_LOGIN_OUTCOMES[type(ex)])
            raise
        self._events.login("success")

    def _login(
        self,
        email: str,
        password: str,
        client: ClientInfo,
        signed_in: Callable[[DbSession, User], _SignedIn],
    ) -> _SignedIn:
        email = lookup_email(email)
        self._throttler.check(email, client.ip_address, audit=_throttled(email, client))
        with self._sessions() as db:
            user = db.scalars(select(User).where(User.email == email)).one_or_none()
        if user is None:
            # SECURITY: same bcrypt work as a wrong password, so timing reveals nothing.
            self._hasher.dummy_verify(password)
            raise self._failed_login(email, None, client)
        if not self._hasher.verify(password, user.hashed_password):
            raise self._failed_login(email, user.id, client)
        if not user.is_active:
            with self._sessions.begin() as db:
                audit.record(
                    db,
                    EventType.LOGIN_FAILED,
                    user_id=user.id,
                    origin=client,
                    details={"reason": "inactive"},
                )
            raise errors.InactiveUser()
        # NOTE: after the password (a guesser learns nothing) and before a second factor
        # is asked for (a code cannot stand in for the mailbox).
        self._check_verified(user)
        # PERF: the new hash is computed before the transaction, so no bcrypt run holds it.
        upgraded = self._upgraded_hash(password, user.hashed_password)
        with self._sessions.begin() as db:
            if upgraded is not None:
                _replace_hash(db, user, upgraded)
            if not user.mfa_enabled:
                # PERF: the throttle is cleared in the session's own transaction.
                self._throttler.forget_address(db, email, client.ip_address)
                return signed_in(db, user)
            # SECURITY: the counters are kept until the second factor is through, so
            # wrong codes add up across mfa_tokens instead of being forgiven by each
            # correct password.
            mfa_token = self._mfa.open_challenge(db, user.id)
        # NOTE: only a correct password gets here, so the 401 reveals MFA to no guesser.
        raise errors.MfaRequired(mfa_token)

    def _check_verified(self, user: User) -> None:
        if self._require_verification and not user.email_verified:
            raise errors.EmailNotVerified(
                "Verify your email address first: open the link in the mail we sent."
            )

    def _open_session(
        self, db: DbSession, user: User, client: ClientInfo, amr: tuple[str, ...]
    ) -> TokenPair:
        session = open_session_row(db, user.id, client, " ".join(amr))
        refresh_token = self._add_refresh_token(db, session, client)
        audit.record(
            db,
            EventType.LOGIN_SUCCEEDED,
            actor_id=user.id,
            user_id=user.id,
            session_id=session.id,
            origin=client,
            details={"amr": list(amr)},
        )
        return self._pair(user, session, refresh_token)

    def refresh(self, presented: str, client: ClientInfo) -> TokenPair:
        """Rotate a refresh token: exactly one use wins; a later reuse ends the session."""
        try:
            pair = self._rotate(presented, client)
        except errors.RefreshRace:
            self._events.refresh("race")
            raise
        except RefreshTokenReused:
            self._events.refresh("reuse")
            raise
        except errors.InvalidRefreshToken:
            self._events.refresh("invalid")
            raise
        self._events.refresh("rotated")
        return pair

    def _rotate(self, presented: str, client: ClientInfo) -> TokenPair:
        now = utcnow()
        with self._sessions.begin() as db:
            found = db.execute(
                select(RefreshToken, Session, User)
                .join(Session, RefreshToken.session_id == Session.id)
                .join(User, RefreshToken.user_id == User.id)
                .where(RefreshToken.token_hash == token_hash(presented))
            ).one_or_none()
            if found is None:
                raise errors.InvalidRefreshToken()
            token, session, user = found
            if session.revoked_at is not None or token.expires_at <= now or not user.is_active:
                raise errors.InvalidRefreshToken()
            # NOTE: a conditional UPDATE is the arbiter between concurrent refreshes on
            # both backends: only one statement can move used_at from NULL.
            claimed = rows_changed(
                db,
                update(RefreshToken)
                .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
                .values(used_at=now),
            )
            if claimed == 1:
                new_refresh = self._add_refresh_token(db, session, client)
                db.execute(
                    update(RefreshToken)
                    .where(RefreshToken.id == token.id)
                    .values(replaced_by_id=new_refresh[0])
                )
                session.last_used_at = now
                return self._pair(user, session, new_refresh)
            used_at = db.scalar(select(RefreshToken.used_at).where(RefreshToken.id == token.id))
            in_grace = self._within_grace(used_at)
            if not in_grace:
                revoked = revoke_session(db, session.id)
                audit.record(
                    db,
                    EventType.SESSION_REUSE_DETECTED,
                    user_id=user.id,
                    session_id=session.id,
                    origin=client,
                    details={"sessions_revoked": len(revoked)},
                )
        if in_grace:
            raise errors.RefreshRace(
                "This refresh token was rotated moments ago; retry with the newer token."
            )
        # SECURITY: reuse of a rotated token means it leaked; the whole session ends.
        self._revocations.publish(revoked)
        raise RefreshTokenReused()

    def logout(self, presented: str, origin: ClientInfo | None = None) -> None:
        """End the session the refresh token belongs to; unknown tokens are ignored."""
        with self._sessions.begin() as db:
            found = db.execute(
                select(RefreshToken.session_id, RefreshToken.user_id).where(
                    RefreshToken.token_hash == token_hash(presented)
                )
            ).one_or_none()
            revoked = revoke_session(db, found[0]) if found else []
            if found:
                audit.record_revocations(
                    db, revoked, user_id=found[1], actor_id=found[1], origin=origin, reason="logout"
                )
        self._revocations.publish(revoked)

    def list_sessions(self, user_id: uuid.UUID, current: str | None) -> list[SessionInfo]:
        """The user's live sessions (not ended, refresh token not expired), newest first."""
        with self._sessions() as db:
            found = db.execute(
                select(Session, RefreshToken.expires_at)
                .join(RefreshToken, RefreshToken.session_id == Session.id)
                .where(
                    Session.user_id == user_id,
                    Session.revoked_at.is_(None),
                    RefreshToken.used_at.is_(None),
                    RefreshToken.expires_at > utcnow(),
                )
                .order_by(Session.created_at.desc(), Session.id)
                .limit(MAX_LISTED_SESSIONS)
            ).all()
        return [
            SessionInfo(
                id=session.id,
                created_at=session.created_at,
                last_used_at=session.last_used_at,
                expires_at=expires_at,
                user_agent=session.user_agent,
                ip_address=session.ip_address,
                current=str(session.id) == current,
            )
            for session, expires_at in found
        ]

    def end_session(
        self, user_id: uuid.UUID, session_id: uuid.UUID, origin: ClientInfo | None = None
    ) -> None:
        """End one live session of this user at once; any other id is SessionNotFound."""
        with self._sessions.begin() as db:
            owned = db.scalar(
                select(Session.id).where(Session.id == session_id, Session.user_id == user_id)
            )
            revoked = revoke_session(db, session_id) if owned else []
            audit.record_revocations(
                db, revoked, user_id=user_id, actor_id=user_id, origin=origin, reason="user"
            )
        if not revoked:
            raise errors.SessionNotFound("No live session with this id.")
        self._revocations.publish(revoked)

    def list_user_sessions(self, actor: User, user_id: uuid.UUID) -> list[SessionInfo]:
        """Another user's live sessions (admin only)."""
        self._require_admin_of(actor, user_id)
        return self.list_sessions(user_id, current=None)

    def end_user_sessions(
        self, actor: User, user_id: uuid.UUID, origin: ClientInfo | None = None
    ) -> None:
        """End every session of a user (admin only)."""
        self._require_admin_of(actor, user_id)
        self.end_all_sessions(user_id, origin, actor_id=actor.id)

    def _require_admin_of(self, actor: User, user_id: uuid.UUID) -> None:
        if not actor.is_superuser:
            raise errors.Forbidden("Only an admin may do this.")
        with self._sessions() as db:
            if db.get(User, user_id) is None:
                raise errors.UserNotFound("No user with this id.")

    def end_all_sessions(
        self,
        user_id: uuid.UUID,
        origin: ClientInfo | None = None,
        *,
        actor_id: uuid.UUID | None = None,
    ) -> None:
        """End every session of the user, the caller's included (`actor_id`: an admin)."""
        with self._sessions.begin() as db:
            revoked = revoke_user_sessions(db, user_id)
            audit.record_revocations(
                db,
                revoked,
                user_id=user_id,
                actor_id=actor_id or user_id,
                origin=origin,
                reason="admin" if actor_id not in (None, user_id) else "user_all",
            )
        self._revocations.publish(revoked)

    def principal(self, user_id: str, session_id: str) -> User | None:
        """The active user of a live session, or None when either has ended."""
        try:
            uid, sid = uuid.UUID(user_id), uuid.UUID(session_id)
        except ValueError:
            return None
        with self._sessions() as db:
            return db.scalars(
                select(User)
                .join(Session, Session.user_id == User.id)
                .where(
                    Session.id == sid,
                    User.id == uid,
                    Session.revoked_at.is_(None),
                    User.is_active.is_(True),
                )
            ).one_or_none()

    def _upgraded_hash(self, password: str, stored: str) -> str | None:
        """Our bcrypt of a just-verified password when the stored hash is another cost or
        an imported format; None when it is current (or cannot be: see below)."""
        if not self._hasher.needs_rehash(stored):
            return None
        try:
            return self._hasher.hash(password)
        except PasswordTooLongError:
            # NOTE: an imported argon2id hash of a password over bcrypt's 72 bytes stays
            # argon2id: replacing it would lock the user out.
            return None

    def _failed_login(
        self, email: str, user_id: uuid.UUID | None, client: ClientInfo
    ) -> errors.InvalidCredentials:
        # SECURITY: an unknown email is recorded too (a spray across accounts shows), but
        # with no user and never the email: its bare hash could be reversed by guessing.
        reason = "wrong_password" if user_id else "unknown_account"
        self._throttler.record_failure(
            email,
            client.ip_address,
            audit=audit.recorder(
                EventType.LOGIN_FAILED, user_id=user_id, origin=client, details={"reason": reason}
            ),
        )
        return errors.InvalidCredentials("Invalid email or password.")

    def _within_grace(self, used_at: datetime | None) -> bool:
        """Whether a lost race is benign: the winner rotated the token moments ago."""
        grace = self._policy.reuse_grace
        if used_at is None or not grace:
            return False  # NOTE: grace 0 is strict: every second use is reuse.
        # NOTE: the age is taken now, after the claim was lost, never from a clock read
        # before it: the winner may have stamped used_at after that earlier read.
        return utcnow() - used_at < grace

    def _add_refresh_token(
        self, db: DbSession, session: Session, client: ClientInfo
    ) -> tuple[uuid.UUID, str]:
        token = new_token()
        row = RefreshToken(
            id=uuid.uuid4(),
            token_hash=token_hash(token),
            session_id=session.id,
            user_id=session.user_id,
            expires_at=utcnow() + self._policy.refresh_ttl,
            user_agent=client.user_agent,
            ip_address=client.ip_address,
        )
        db.add(row)
        db.flush()
        return row.id, token

    def _pair(self, user: User, session: Session, refresh: tuple[uuid.UUID, str]) -> TokenPair:
        access = self._key_ring.issue_access_token(
            subject=str(user.id),
            session_id=str(session.id),
            amr=session.amr.split(),
            role=user.role,
            ttl_seconds=self._policy.access_ttl_seconds,
            issuer=self._policy.issuer,
            audience=self._policy.audience,
        )
        return TokenPair(access, refresh[1], self._policy.access_ttl_seconds)


def _throttled(email: str, client: ClientInfo) -> Callable[[DbSession], None]:
    """The `login.throttled` of a refused login: its user (if any) learns of the attack."""

    def write(db: DbSession) -> None:
        user_id = db.scalar(select(User.id).where(User.email == email))
        audit.record(db, EventType.LOGIN_THROTTLED, user_id=user_id, origin=client)

    return write


def _replace_hash(db: DbSession, user: User, upgraded: str) -> None:
    """Store the upgraded hash in the login's transaction, unless the password changed
    since it was verified (a concurrent change or reset wins: it is the newer password)."""
    db.execute(
        update(User)
        .where(User.id == user.id, User.hashed_password == user.hashed_password)
        # NOTE: updated_at stays: a hash upgrade is no change the user or an admin made.
        .values(hashed_password=upgraded, updated_at=User.updated_at)
    )


def _signed_in_elsewhere(
    db: DbSession, user: User, client: ClientInfo, amr: tuple[str, ...]
) -> User:
    """Record a sign-in that opens no session here (the OAuth pages; the grant's session
    is opened when its code is redeemed)."""
    audit.record(
        db,
        EventType.LOGIN_SUCCEEDED,
        actor_id=user.id,
        user_id=user.id,
        origin=client,
        details={"amr": list(amr), "during": "oauth.authorize"},
    )
    return user


def open_session_row(
    db: DbSession, user_id: uuid.UUID, client: ClientInfo, amr: str, **columns: str
) -> Session:
    """Add a new live session (a login, or an OAuth grant with its `client_id`/`scope`)."""
    now = utcnow()
    session = Session(
        id=uuid.uuid4(),
        user_id=user_id,
        user_agent=client.user_agent,
        ip_address=client.ip_address,
        created_at=now,
        last_used_at=now,
        amr=amr,
        **columns,
    )
    db.add(session)
    db.flush()
    return session
