"""Accounts: registration, the users admin API, profile updates and password changes."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import User
from auth_service.security.passwords import (
    MAX_PASSWORD_BYTES,
    PasswordHasher,
    PasswordTooLongError,
)
from auth_service.services import audit
from auth_service.services.audit import ClientInfo, EventType
from auth_service.services.email_verification import EmailVerificationService
from auth_service.services.emails import canonical_email, lookup_email
from auth_service.services.revocation import RevocationList, revoke_user_sessions
from auth_service.services.throttle import LoginThrottler, clear_account

ADMIN_ONLY_FIELDS = frozenset({"is_active", "is_superuser"})


@dataclass(frozen=True)
class NewUser:
    """The fields of a user to create."""

    email: str
    password: str
    full_name: str | None = None
    is_active: bool = True
    is_superuser: bool = False
    # NOTE: an admin (API or CLI) vouches for the address they create; self-registration
    # proves it by mail.
    email_verified: bool = False


class AccountService:
    """Users and their credentials, with the self/admin rules of the API."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        hasher: PasswordHasher,
        revocations: RevocationList,
        throttler: LoginThrottler,
        verification: EmailVerificationService,
        *,
        mail_sessions: sessionmaker[DbSession],
        allow_registration: bool,
        require_verification: bool,
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._revocations = revocations
        self._throttler = throttler
        self._verification = verification
        # SECURITY: transactions that mail a verification link run here (see build_services).
        self._mail_sessions = mail_sessions
        self._allow_registration = allow_registration
        self.verification_required = require_verification

    def register(
        self, email: str, password: str, full_name: str | None, origin: ClientInfo | None = None
    ) -> User:
        """Public self-registration (unless disabled): unverified, mailed a verification link."""
        if not self._allow_registration:
            raise errors.RegistrationDisabled("Self-registration is disabled.")
        new = NewUser(email=email, password=password, full_name=full_name)
        return self._create(new, origin=origin, via="register")

    def register_quietly(
        self, email: str, password: str, full_name: str | None, origin: ClientInfo | None = None
    ) -> None:
        """Registration whose outcome only the mailbox learns (REQUIRE_EMAIL_VERIFICATION).

        SECURITY: a new address gets its verification mail, a taken one a mail to its owner;
        the caller answers both alike, and both cost one bcrypt hash and one failed or
        successful insert, so neither the answer nor its timing says an account exists.
        """
        try:
            self.register(email, password, full_name, origin)
        except errors.EmailTaken:
            self._verification.warn_owner(canonical_email(email))

    def create_user(self, actor: User, new: NewUser, origin: ClientInfo | None = None) -> User:
        """Admin creation of a user with any flags; the admin vouches for the address."""
        _require_admin(actor)
        verified = dataclasses.replace(new, email_verified=True)
        return self._create(verified, actor_id=actor.id, origin=origin, via="admin")

    def email_taken(self, email: str) -> bool:
        """Whether a user with this email (compared normalized) exists."""
        with self._sessions() as db:
            found = db.scalar(select(User.id).where(User.email == lookup_email(email)))
        return found is not None

    def ensure_admin(self, email: str, password: str) -> bool:
        """Create a superuser unless the email is taken; whether one was created."""
        try:
            self._create(
                NewUser(email=email, password=password, is_superuser=True, email_verified=True),
                via="cli",
            )
        except errors.EmailTaken:
            return False
        return True

    def list_users(self, actor: User, offset: int, limit: int) -> tuple[list[User], int]:
        """One page of users in creation order, and the total count."""
        _require_admin(actor)
        with self._sessions() as db:
            total = db.scalar(select(func.count()).select_from(User)) or 0
            users = list(
                db.scalars(
                    select(User).order_by(User.created_at, User.id).offset(offset).limit(limit)
                )
            )
        return users, total

    def get_user(self, actor: User, user_id: uuid.UUID) -> User:
        """A user as seen by themselves or an admin."""
        _require_self_or_admin(actor, user_id)
        with self._sessions() as db:
            user = db.get(User, user_id)
        if user is None:
            raise errors.UserNotFound("No user with this id.")
        return user

    def update_user(
        self,
        actor: User,
        user_id: uuid.UUID,
        changes: dict[str, Any],
        origin: ClientInfo | None = None,
    ) -> User:
        """Apply a partial update; flags are admin-only; deactivation or demotion ends all
        sessions; a new email address is unverified until the link mailed to it is used."""
        _require_self_or_admin(actor, user_id)
        if ADMIN_ONLY_FIELDS & changes.keys() and not actor.is_superuser:
            raise errors.Forbidden("Only an admin may change is_active or is_superuser.")
        if "email" in changes:
            changes = {**changes, "email": canonical_email(changes["email"])}
        revoked: list[str] = []
        new_address = False
        try:
            with self._mail_sessions.begin() as db:
                admins = _lock_superusers(db) if ADMIN_ONLY_FIELDS & changes.keys() else []
                user = _load_for_update(db, user_id)
                was_superuser, was_active = user.is_superuser, user.is_active
                new_address = changes.get("email", user.email) != user.email
                if _loses_superuser(user, changes):
                    _keep_one_superuser(admins)
                changed = sorted(n for n, v in changes.items() if getattr(user, n) != v)
                for name, value in changes.items():
                    setattr(user, name, value)
                if new_address:
                    # SECURITY: whoever changed it (the user or an admin), nobody has shown
                    # that the new address reaches the user.
                    user.email_verified = False
                db.flush()
                if new_address:
                    self._verification.issue(db, user)
                # SECURITY: access tokens carry the role; a demoted admin's tokens would say
                # "admin" (and the gateway would forward X-User-Roles: admin) until they
                # expire, so demotion ends the sessions exactly like deactivation.
                if not user.is_active or (was_superuser and not user.is_superuser):
                    revoked = revoke_user_sessions(db, user.id)
                _record_update(db, actor, user, changed, was_active, origin, len(revoked))
        except IntegrityError:
            raise errors.EmailTaken("An account with this email already exists.") from None
        self._revocations.publish(revoked)
        if new_address:
            self._verification.ring()
        return user

    def delete_user(
        self, actor: User, user_id: uuid.UUID, origin: ClientInfo | None = None
    ) -> None:
        """Delete a user (admin only), never the last active superuser."""
        _require_admin(actor)
        with self._sessions.begin() as db:
            admins = _lock_superusers(db)
            user = _load_for_update(db, user_id)
            if user.is_superuser and user.is_active:
                _keep_one_superuser(admins)
            revoked = revoke_user_sessions(db, user.id)
            db.delete(user)
            # NOTE: the trail keeps the user's events (no foreign key): their history
            # outlives the account.
            audit.record(
                db,
                EventType.USER_DELETED,
                actor_id=actor.id,
                user_id=user.id,
                origin=origin,
                details={"sessions_revoked": len(revoked)},
            )
        self._revocations.publish(revoked)

    def change_password(
        self, actor: User, session_id: uuid.UUID, current: str, new: str, client: ClientInfo
    ) -> None:
        """Change one's own password; every other session of the user ends.

        SECURITY: a wrong current password is a failed login for the throttle: a stolen
        access token must not buy unlimited guesses at the password. It is recorded as
        `reauth.failed` (never `password.changed`: nothing changed).
        """
        address = client.ip_address
        self._throttler.check(
            actor.email,
            address,
            audit=audit.recorder(
                EventType.LOGIN_THROTTLED,
                actor_id=actor.id,
                user_id=actor.id,
                session_id=session_id,
                origin=client,
                details={"during": "password.change"},
            ),
        )
        if not self._hasher.verify(current, actor.hashed_password):
            self._throttler.record_failure(
                actor.email,
                address,
                audit=audit.recorder(
                    EventType.REAUTH_FAILED,
                    actor_id=actor.id,
                    user_id=actor.id,
                    session_id=session_id,
                    origin=client,
                    details={"during": "password.change"},
                ),
            )
            raise errors.WrongPassword("The current password is wrong.", field="current_password")
        hashed = hash_password(self._hasher, new, field="new_password")
        with self._sessions.begin() as db:
            user = _load_for_update(db, actor.id)
            if user.hashed_password != actor.hashed_password:
                # SECURITY: a concurrent change won while we hashed; `current` was checked
                # against the hash it replaced, so it is no longer the current password.
                raise errors.WrongPassword(
                    "The current password is wrong.", field="current_password"
                )
            user.hashed_password = hashed
            revoked = revoke_user_sessions(db, user.id, keep=session_id)
            self._throttler.forget_address(db, actor.email, address)
            audit.record(
                db,
                EventType.PASSWORD_CHANGED,
                actor_id=user.id,
                user_id=user.id,
                session_id=session_id,
                origin=client,
                details={"sessions_revoked": len(revoked)},
            )
        self._revocations.publish(revoked)

    def unlock(self, actor: User, user_id: uuid.UUID, origin: ClientInfo | None = None) -> None:
        """Clear every login throttle of a user, from all addresses (admin only)."""
        _require_admin(actor)
        with self._sessions.begin() as db:
            user = db.get(User, user_id)
            if user is None:
                raise errors.UserNotFound("No user with this id.")
            clear_account(db, user.email)
            audit.record(
                db, EventType.USER_UNLOCKED, actor_id=actor.id, user_id=user.id, origin=origin
            )

    def _create(
        self,
        new: NewUser,
        *,
        via: str,
        actor_id: uuid.UUID | None = None,
        origin: ClientInfo | None = None,
    ) -> User:
        user = User(
            id=uuid.uuid4(),
            email=canonical_email(new.email),
            hashed_password=hash_password(self._hasher, new.password, field="password"),
            full_name=new.full_name,
            is_active=new.is_active,
            is_superuser=new.is_superuser,
            email_verified=new.email_verified,
        )
        try:
            with self._mail_sessions.begin() as db:
                db.add(user)
                db.flush()
                if not user.email_verified:
                    # The link is mailed if and only if the account is created.
                    self._verification.issue(db, user)
                # NOTE: `via` says which door: register, admin, cli (or import).
                audit.record(
                    db,
                    EventType.USER_CREATED,
                    # A sign-up is the user's own act; the CLI's operator is no user.
                    actor_id=user.id if via == "register" else actor_id,
                    user_id=user.id,
                    origin=origin,
                    details={"via": via, "is_superuser": new.is_superuser},
                )
        except IntegrityError:
            # NOTE: the unique index on the normalised email decides concurrent sign-ups.
            raise errors.EmailTaken("An account with this email already exists.") from None
        if not user.email_verified:
            self._verification.ring()
        return user


def hash_password(hasher: PasswordHasher, password: str, *, field: str) -> str:
    """Hash a new password; over bcrypt's 72 bytes is a 422 naming the field."""
    try:
        return hasher.hash(password)
    except PasswordTooLongError:
        raise errors.PasswordTooLong(
            f"Passwords can be at most {MAX_PASSWORD_BYTES} bytes of UTF-8.", field=field
        ) from None


def _record_update(
    db: DbSession,
    actor: User,
    user: User,
    changed: list[str],
    was_active: bool,
    origin: ClientInfo | None,
    sessions_revoked: int,
) -> None:
    """`user.updated` naming the changed fields (never their values), and
    `user.deactivated` when the account was switched off."""
    if changed:
        audit.record(
            db,
            EventType.USER_UPDATED,
            actor_id=actor.id,
            user_id=user.id,
            origin=origin,
            details={"fields": changed},
        )
    if was_active and not user.is_active:
        audit.record(
            db,
            EventType.USER_DEACTIVATED,
            actor_id=actor.id,
            user_id=user.id,
            origin=origin,
            details={"sessions_revoked": sessions_revoked},
        )


def _require_admin(actor: User) -> None:
    if not actor.is_superuser:
        raise errors.Forbidden("Only an admin may do this.")


def _require_self_or_admin(actor: User, user_id: uuid.UUID) -> None:
    if actor.id != user_id and not actor.is_superuser:
        raise errors.Forbidden("You may only see and change your own account.")


def _load_for_update(db: DbSession, user_id: uuid.UUID) -> User:
    user = db.scalars(select(User).where(User.id == user_id).with_for_update()).one_or_none()
    if user is None:
        raise errors.UserNotFound("No user with this id.")
    return user


def _loses_superuser(user: User, changes: dict[str, Any]) -> bool:
    if not (user.is_superuser and user.is_active):
        return False
    return changes.get("is_superuser") is False or changes.get("is_active") is False


def _lock_superusers(db: DbSession) -> list[uuid.UUID]:
    """Lock every active superuser's row, in id order; their ids.

    NOTE: taken before the target's row and always in one order, so two admins demoting or
    deleting each other queue behind one another instead of deadlocking (a 503 before;
    tests/reliability/test_drill_concurrency.py).
    """
    return list(
        db.scalars(
            select(User.id)
            .where(User.is_superuser.is_(True), User.is_active.is_(True))
            .order_by(User.id)
            .with_for_update()
        )
    )


def _keep_one_superuser(admins: list[uuid.UUID]) -> None:
    if len(admins) <= 1:
        raise errors.LastSuperuser("The last active superuser cannot be removed or demoted.")
