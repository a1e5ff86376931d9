"""Domain errors raised by services; each carries a stable code and an HTTP status.

Services never import Falcon: `problems.py` turns these into problem+json responses.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every failure a client may be told about."""

    status: int = 400
    code: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.field = field
        # RFC 9457 §3.2 extension members of the problem (e.g. `mfa_token`).
        self.members: dict[str, str] = {}


class RegistrationDisabled(DomainError):
    status, code, title = 403, "registration-disabled", "Registration is disabled"


class EmailTaken(DomainError):
    status, code, title = 409, "email-taken", "Email already registered"


class InvalidCredentials(DomainError):
    status, code, title = 401, "invalid-credentials", "Invalid email or password"


class InactiveUser(DomainError):
    status, code, title = 403, "inactive-user", "Account is inactive"


class LoginThrottled(DomainError):
    status, code, title = 429, "login-throttled", "Too many failed logins"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed login attempts; try again later or reset your password.")
        self.retry_after = retry_after


class InvalidRefreshToken(DomainError):
    status, code, title = 401, "invalid-refresh-token", "Invalid refresh token"


class RefreshRace(DomainError):
    status, code, title = 409, "refresh-token-rotated", "Refresh token was just rotated"


class InvalidResetToken(DomainError):
    status, code, title = 400, "invalid-reset-token", "Invalid or expired reset token"


class WrongPassword(DomainError):
    status, code, title = 400, "wrong-password", "Current password is wrong"


class PasswordTooLong(DomainError):
    status, code, title = 422, "password-too-long", "Password is too long"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Not allowed"


class UserNotFound(DomainError):
    status, code, title = 404, "user-not-found", "User not found"


class LastSuperuser(DomainError):
    status, code, title = 409, "last-superuser", "Cannot remove the last active superuser"


class SessionNotFound(DomainError):
    status, code, title = 404, "session-not-found", "Session not found"


class MfaRequired(DomainError):
    """The password was right and the account has a second factor: finish at login_mfa."""

    status, code, title = 401, "mfa-required", "Second factor required"

    def __init__(self, mfa_token: str) -> None:
        super().__init__("Send a code from your authenticator app (or a recovery code).")
        self.members = {"mfa_token": mfa_token}


class InvalidMfaToken(DomainError):
    status, code, title = 401, "invalid-mfa-token", "Invalid or expired MFA token"


class InvalidMfaCode(DomainError):
    status, code, title = 401, "invalid-mfa-code", "Invalid code"


class WrongMfaCode(DomainError):
    status, code, title = 400, "wrong-mfa-code", "The code is wrong"


class MfaAlreadyEnabled(DomainError):
    status, code, title = 409, "mfa-already-enabled", "A second factor is already enabled"


class MfaNotEnabled(DomainError):
    status, code, title = 409, "mfa-not-enabled", "No second factor is enabled"


class MfaEnrolmentNotStarted(DomainError):
    status, code, title = 409, "mfa-enrolment-not-started", "No pending enrolment"
