"""Domain errors raised by services; each names its registered problem type.

Services never import Falcon: `problems.py` turns these into problem+json responses with
the type's status and title (authgate_common/problem_types.py).
"""

from __future__ import annotations

from authgate_common.problem_types import ProblemType


class DomainError(Exception):
    """Base of every failure a client may be told about."""

    problem: ProblemType = ProblemType.BAD_REQUEST

    def __init__(self, detail: str | None = None, *, field: str | None = None) -> None:
        super().__init__(detail or self.problem.problem_title)
        self.detail = detail
        self.field = field
        # RFC 9457 §3.2 extension members of the problem (e.g. `mfa_token`).
        self.members: dict[str, str] = {}

    def field_errors(self) -> list[dict[str, str]] | None:
        """The problem's `errors` entries: the one field this error is about, if any."""
        if not self.field:
            return None
        message = self.detail or self.problem.problem_title
        return [{"field": self.field, "code": self.problem.slug, "message": message}]


class RegistrationDisabled(DomainError):
    problem = ProblemType.REGISTRATION_DISABLED


class EmailTaken(DomainError):
    problem = ProblemType.EMAIL_TAKEN


class InvalidCredentials(DomainError):
    problem = ProblemType.INVALID_CREDENTIALS


class InactiveUser(DomainError):
    problem = ProblemType.INACTIVE_USER


class LoginThrottled(DomainError):
    problem = ProblemType.LOGIN_THROTTLED

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed login attempts; try again later or reset your password.")
        self.retry_after = retry_after


class InvalidRefreshToken(DomainError):
    problem = ProblemType.INVALID_REFRESH_TOKEN


class RefreshRace(DomainError):
    problem = ProblemType.REFRESH_TOKEN_ROTATED


class InvalidResetToken(DomainError):
    problem = ProblemType.INVALID_RESET_TOKEN


class InvalidVerificationToken(DomainError):
    problem = ProblemType.INVALID_VERIFICATION_TOKEN


class EmailNotVerified(DomainError):
    """The right password, but REQUIRE_EMAIL_VERIFICATION is on and the address is unproven."""

    problem = ProblemType.EMAIL_NOT_VERIFIED


class WrongPassword(DomainError):
    problem = ProblemType.WRONG_PASSWORD


class PasswordTooLong(DomainError):
    problem = ProblemType.PASSWORD_TOO_LONG


class InvalidEmail(DomainError):
    """Not an email address: the same 422 as a schema violation of the field."""

    problem = ProblemType.VALIDATION_ERROR

    def __init__(self, *, field: str) -> None:
        super().__init__(f"Invalid fields: {field}", field=field)
        self.field_name = field

    def field_errors(self) -> list[dict[str, str]]:
        """One `format` error, worded like the schema's own (the input is never echoed)."""
        message = "must be a valid idn-email"
        return [{"field": self.field_name, "code": "format", "message": message}]


class Forbidden(DomainError):
    problem = ProblemType.FORBIDDEN


class UserNotFound(DomainError):
    problem = ProblemType.USER_NOT_FOUND


class LastSuperuser(DomainError):
    problem = ProblemType.LAST_SUPERUSER


class InvalidCursor(DomainError):
    """A cursor this service did not issue: the same 422 as the spec's pattern gives."""

    problem = ProblemType.VALIDATION_ERROR


class SessionNotFound(DomainError):
    problem = ProblemType.SESSION_NOT_FOUND


class MfaRequired(DomainError):
    """The password was right and the account has a second factor: finish at login_mfa."""

    problem = ProblemType.MFA_REQUIRED

    def __init__(self, mfa_token: str) -> None:
        super().__init__("Send a code from your authenticator app (or a recovery code).")
        self.members = {"mfa_token": mfa_token}


class InvalidMfaToken(DomainError):
    problem = ProblemType.INVALID_MFA_TOKEN


class InvalidMfaCode(DomainError):
    problem = ProblemType.INVALID_MFA_CODE


class WrongMfaCode(DomainError):
    problem = ProblemType.WRONG_MFA_CODE


class MfaAlreadyEnabled(DomainError):
    problem = ProblemType.MFA_ALREADY_ENABLED


class MfaNotEnabled(DomainError):
    problem = ProblemType.MFA_NOT_ENABLED


class MfaEnrolmentNotStarted(DomainError):
    problem = ProblemType.MFA_ENROLMENT_NOT_STARTED


class OAuthClientNotFound(DomainError):
    problem = ProblemType.OAUTH_CLIENT_NOT_FOUND


class OAuthClientIsPublic(DomainError):
    problem = ProblemType.OAUTH_CLIENT_IS_PUBLIC


class InvalidClientMetadata(DomainError):
    """A client registration breaks a rule JSON Schema cannot state: 422 naming each field."""

    problem = ProblemType.VALIDATION_ERROR

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        fields = ", ".join(sorted({field for field, _, _ in problems}))
        super().__init__(f"Invalid fields: {fields}")
        self.problems = problems

    def field_errors(self) -> list[dict[str, str]]:
        """One entry per broken rule: the field, a stable code, what the rule says."""
        return [
            {"field": field, "code": code, "message": message}
            for field, code, message in self.problems
        ]
