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

    def field_errors(self) -> list[dict[str, str]] | None:
        """The problem's `errors` entries: the one field this error is about, if any."""
        if not self.field:
            return None
        return [{"field": self.field, "code": self.code, "message": self.detail or self.title}]


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
        super().__init__("Too many failed login attempts; try again later.")
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


class InvalidEmail(DomainError):
    """Not an email address: the same 422 as a schema violation of the field."""

    status, code, title = 422, "validation-error", "Request validation failed"

    def __init__(self, *, field: str) -> None:
        super().__init__(f"Invalid fields: {field}", field=field)
        self.field_name = field

    def field_errors(self) -> list[dict[str, str]]:
        """One `format` error, worded like the schema's own (the input is never echoed)."""
        message = "must be a valid email"
        return [{"field": self.field_name, "code": "format", "message": message}]


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Not allowed"


class UserNotFound(DomainError):
    status, code, title = 404, "user-not-found", "User not found"


class LastSuperuser(DomainError):
    status, code, title = 409, "last-superuser", "Cannot remove the last active superuser"
