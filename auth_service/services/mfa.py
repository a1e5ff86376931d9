"""The second factor: TOTP (RFC 6238) enrolment, recovery codes, and the login's MFA step.

Only the password step of a login uses bcrypt; the MFA step checks a TOTP code (HMAC)
or a recovery code (SHA-256: each carries 80 random bits, so a slow hash adds nothing),
so login throughput with MFA on stays bound by one bcrypt check.
"""

from __future__ import annotations

import base64
import hmac
import io
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import segno
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service import errors
from auth_service.db.models import MfaChallenge, RecoveryCode, TotpCredential, User, utcnow
from auth_service.db.session import rows_changed
from auth_service.security.opaque import new_token, token_hash
from auth_service.security.passwords import PasswordHasher
from auth_service.security.secrets_box import SecretBox
from auth_service.services import audit
from auth_service.services.audit import ClientInfo, EventType
from auth_service.services.revocation import RevocationList, revoke_user_sessions
from auth_service.services.throttle import LoginThrottler

RECOVERY_CODE_COUNT = 10
MFA_TOKEN_TTL = timedelta(minutes=5)
# SECURITY: guesses per mfa_token; the account-wide ceiling of the login throttle bounds
# guesses across tokens (each token costs a correct password anyway).
MAX_CODE_ATTEMPTS = 5
# ±1 step (30 s) of clock drift between the server and the authenticator (RFC 6238 §5.2).
DRIFT_STEPS = 1


@dataclass(frozen=True)
class TotpEnrolment:
    """A pending enrolment: what the authenticator app needs."""

    secret: str
    otpauth_uri: str
    qr_svg: str


class MfaService:
    """Enrols, checks and removes a user's TOTP factor and recovery codes."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        hasher: PasswordHasher,
        box: SecretBox,
        revocations: RevocationList,
        throttler: LoginThrottler,
        *,
        issuer: str,
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._box = box
        self._revocations = revocations
        self._throttler = throttler
        self._issuer = issuer

    # --- self-service ------------------------------------------------------------------

    def start_enrolment(self, actor: User, password: str, client: ClientInfo) -> TotpEnrolment:
        """A fresh secret, pending until confirmed; replaces an earlier pending one."""
        self._check_password(actor, password, client, during="mfa.enrol")
        secret = pyotp.random_base32()  # 160 bits, as RFC 4226 §4 recommends
        with self._sessions.begin() as db:
            user = _lock_user(db, actor.id)
            if user.mfa_enabled:
                raise errors.MfaAlreadyEnabled("Disable the current second factor first.")
            db.execute(delete(TotpCredential).where(TotpCredential.user_id == user.id))
            db.add(TotpCredential(user_id=user.id, secret_encrypted=self._box.encrypt(secret)))
        uri = pyotp.TOTP(secret).provisioning_uri(name=actor.email, issuer_name=self._issuer)
        return TotpEnrolment(secret=secret, otpauth_uri=uri, qr_svg=_qr_svg(uri))

    def confirm_enrolment(self, actor: User, code: str, client: ClientInfo) -> list[str]:
        """Turn MFA on with a first valid code; the recovery codes, shown this once."""
        with self._sessions.begin() as db:
            user = _lock_user(db, actor.id)
            if user.mfa_enabled:
                raise errors.MfaAlreadyEnabled("A second factor is already enabled.")
            credential = db.get(TotpCredential, user.id)
            if credential is None:
                raise errors.MfaEnrolmentNotStarted("Start an enrolment first.")
            accepted = self._accept_totp(db, credential, code)
            if accepted:
                credential.confirmed_at = utcnow()
                user.mfa_enabled = True
                audit.record(
                    db, EventType.MFA_ENROLLED, actor_id=user.id, user_id=user.id, origin=client
                )
                return _replace_recovery_codes(db, user.id)
        # NOTE: the wrong code changed nothing, so its event has a transaction of its own.
        with self._sessions.begin() as db:
            audit.record(
                db,
                EventType.MFA_FAILED,
                actor_id=actor.id,
                user_id=actor.id,
                origin=client,
                details={"during": "mfa.confirm"},
            )
        raise errors.WrongMfaCode("The code is wrong or was already used.", field="code")

    def disable(self, actor: User, password: str, code: str, client: ClientInfo) -> None:
        """Turn MFA off: needs the password and a current code (or a recovery code)."""
        self._check_password(actor, password, client, during="mfa.disable")
        with self._sessions.begin() as db:
            user = _lock_user(db, actor.id)
            if not user.mfa_enabled:
                raise errors.MfaNotEnabled("No second factor is enabled.")
            accepted = self._accept_code(db, user.id, code)
            if accepted:
                _remove_factor(db, user)
                audit.record(
                    db, EventType.MFA_REMOVED, actor_id=user.id, user_id=user.id, origin=client
                )
        if not accepted:
            # SECURITY: counted like a wrong code at login, or the password alone would
            # buy unlimited guesses at the code that protects the factor.
            self._throttler.record_failure(
                actor.email,
                client.ip_address,
                audit=audit.recorder(
                    EventType.MFA_FAILED,
                    actor_id=actor.id,
                    user_id=actor.id,
                    origin=client,
                    details={"during": "mfa.disable"},
                ),
            )
            raise errors.WrongMfaCode("The code is wrong or was already used.", field="code")

    def regenerate_recovery_codes(
        self, actor: User, password: str, client: ClientInfo
    ) -> list[str]:
        """A fresh set of recovery codes; every earlier code stops working."""
        self._check_password(actor, password, client, during="mfa.recovery_codes")
        with self._sessions.begin() as db:
            user = _lock_user(db, actor.id)
            if not user.mfa_enabled:
                raise errors.MfaNotEnabled("Enable a second factor first.")
            audit.record(
                db,
                EventType.MFA_RECOVERY_CODES_REGENERATED,
                actor_id=user.id,
                user_id=user.id,
                origin=client,
            )
            return _replace_recovery_codes(db, user.id)

    # --- admin -------------------------------------------------------------------------

    def admin_reset(
        self, actor: User, user_id: uuid.UUID, client: ClientInfo | None = None
    ) -> None:
        """A lost device: remove the user's second factor and end all of their sessions."""
        if not actor.is_superuser:
            raise errors.Forbidden("Only an admin may do this.")
        with self._sessions.begin() as db:
            user = db.scalars(select(User).where(User.id == user_id).with_for_update()).first()
            if user is None:
                raise errors.UserNotFound("No user with this id.")
            _remove_factor(db, user)
            revoked = revoke_user_sessions(db, user.id)
            audit.record(
                db,
                EventType.MFA_REMOVED,
                actor_id=actor.id,
                user_id=user.id,
                origin=client,
                details={"reason": "admin_reset", "sessions_revoked": len(revoked)},
            )
        self._revocations.publish(revoked)

    # --- the login's second step -------------------------------------------------------

    def open_challenge(self, db: DbSession, user_id: uuid.UUID) -> str:
        """An mfa_token for a user whose password was right, in the caller's transaction."""
        token = new_token()
        db.add(
            MfaChallenge(
                id=uuid.uuid4(),
                token_hash=token_hash(token),
                user_id=user_id,
                expires_at=utcnow() + MFA_TOKEN_TTL,
            )
        )
        return token

    def redeem(self, mfa_token: str, code: str, client: ClientInfo) -> User:
        """The user whose login this completes; the token is used up on success."""
        user, challenge_id = self._count_attempt(mfa_token)
        self._throttler.check(
            user.email,
            client.ip_address,
            audit=audit.recorder(
                EventType.LOGIN_THROTTLED,
                user_id=user.id,
                origin=client,
                details={"during": "login.mfa"},
            ),
        )
        with self._sessions.begin() as db:
            accepted = self._accept_code(db, user.id, code)
            if accepted and not _claim_challenge(db, challenge_id):
                # A concurrent request with the same token won; undo this code's use.
                raise errors.InvalidMfaToken("The MFA token is invalid or expired.")
        if not accepted:
            self._throttler.record_failure(
                user.email,
                client.ip_address,
                audit=audit.recorder(
                    EventType.MFA_FAILED,
                    user_id=user.id,
                    origin=client,
                    details={"during": "login.mfa"},
                ),
            )
            raise errors.InvalidMfaCode("The code is wrong or was already used.")
        return user

    def _count_attempt(self, mfa_token: str) -> tuple[User, uuid.UUID]:
        """Spend one of the token's attempts before any code is checked (committed now)."""
        with self._sessions.begin() as db:
            found = db.execute(
                select(MfaChallenge.id, User)
                .join(User, MfaChallenge.user_id == User.id)
                .where(MfaChallenge.token_hash == token_hash(mfa_token))
            ).one_or_none()
            # NOTE: the conditional UPDATE is the arbiter: concurrent guesses with one
            # token cannot get past MAX_CODE_ATTEMPTS between them.
            counted = found is not None and rows_changed(
                db,
                update(MfaChallenge)
                .where(
                    MfaChallenge.id == found[0],
                    MfaChallenge.used_at.is_(None),
                    MfaChallenge.expires_at > utcnow(),
                    MfaChallenge.attempts < MAX_CODE_ATTEMPTS,
                )
                .values(attempts=MfaChallenge.attempts + 1),
            )
        if not counted or found is None or not (found[1].is_active and found[1].mfa_enabled):
            raise errors.InvalidMfaToken("The MFA token is invalid or expired.")
        return found[1], found[0]

    # --- codes -------------------------------------------------------------------------

    def _accept_code(self, db: DbSession, user_id: uuid.UUID, code: str) -> bool:
        """A TOTP code of a confirmed factor, or an unused recovery code (used up now)."""
        credential = db.get(TotpCredential, user_id)
        if (
            credential is not None
            and credential.confirmed_at is not None
            and self._accept_totp(db, credential, code)
        ):
            return True
        return _use_recovery_code(db, user_id, code)

    def _accept_totp(self, db: DbSession, credential: TotpCredential, code: str) -> bool:
        """Whether `code` is valid now and newer than the last accepted one (then recorded)."""
        secret = self._box.decrypt(credential.secret_encrypted)
        step = _matching_step(secret, code.strip(), credential.last_used_step, utcnow())
        if step is None:
            return False
        # SECURITY: conditional, so two requests with one code cannot both pass.
        return (
            rows_changed(
                db,
                update(TotpCredential)
                .where(
                    TotpCredential.user_id == credential.user_id,
                    or_(
                        TotpCredential.last_used_step.is_(None),
                        TotpCredential.last_used_step < step,
                    ),
                )
                .values(last_used_step=step),
            )
            == 1
        )

    def _check_password(
        self, actor: User, password: str, client: ClientInfo, *, during: str
    ) -> None:
        """The current password, throttled like a login (a stolen token buys no guesses)."""

        def event(event_type: EventType) -> Callable[[DbSession], None]:
            details = {"during": during}
            return audit.recorder(
                event_type, actor_id=actor.id, user_id=actor.id, origin=client, details=details
            )

        self._throttler.check(
            actor.email, client.ip_address, audit=event(EventType.LOGIN_THROTTLED)
        )
        if not self._hasher.verify(password, actor.hashed_password):
            self._throttler.record_failure(
                actor.email, client.ip_address, audit=event(EventType.REAUTH_FAILED)
            )
            raise errors.WrongPassword("The password is wrong.", field="password")


def _matching_step(secret: str, code: str, last_step: int | None, now: datetime) -> int | None:
    """The time step within the drift window whose code is `code`, if not yet used."""
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue  # SECURITY: a code is accepted once (RFC 6238 §5.2)
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_code() -> str:
    """80 random bits as 16 base32 characters in groups of four: `ABCD-EFGH-IJKL-MNOP`."""
    raw = base64.b32encode(secrets.token_bytes(10)).decode("ascii")
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def _recovery_code_hash(user_id: uuid.UUID, code: str) -> str:
    """The stored form: case, spaces and dashes do not matter when typing a code."""
    normalised = "".join(code.split()).replace("-", "").upper()
    return token_hash(f"{user_id}:{normalised}")


def _replace_recovery_codes(db: DbSession, user_id: uuid.UUID) -> list[str]:
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    db.add_all(
        RecoveryCode(id=uuid.uuid4(), user_id=user_id, code_hash=_recovery_code_hash(user_id, c))
        for c in codes
    )
    return codes


def _use_recovery_code(db: DbSession, user_id: uuid.UUID, code: str) -> bool:
    return (
        rows_changed(
            db,
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == _recovery_code_hash(user_id, code),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=utcnow()),
        )
        == 1
    )


def _claim_challenge(db: DbSession, challenge_id: uuid.UUID) -> bool:
    claimed = rows_changed(
        db,
        update(MfaChallenge)
        .where(MfaChallenge.id == challenge_id, MfaChallenge.used_at.is_(None))
        .values(used_at=utcnow()),
    )
    return claimed == 1


def _remove_factor(db: DbSession, user: User) -> None:
    """Forget the secret, the recovery codes and open challenges; MFA is off."""
    for model in (TotpCredential, RecoveryCode, MfaChallenge):
        db.execute(delete(model).where(model.user_id == user.id))
    user.mfa_enabled = False


def _lock_user(db: DbSession, user_id: uuid.UUID) -> User:
    """The user's row, locked: enrolment steps of one user run one at a time."""
    user = db.scalars(select(User).where(User.id == user_id).with_for_update()).first()
    if user is None:
        raise errors.UserNotFound("No user with this id.")
    return user


def _qr_svg(uri: str) -> str:
    """The otpauth URI as a standalone SVG QR code."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False)
    return out.getvalue().decode("utf-8")
