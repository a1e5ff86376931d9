"""Every problem `type` either service (or its gunicorn worker) can send: one registry.

A problem+json answer (RFC 9457) names its cause with a `type` URI: this base plus one
kebab-case slug from `ProblemType`. Code that answers with a problem takes a member of
this enum, never a string, so nothing can send a type that is not registered here; and
`openapi/auth.yaml` lists exactly these types with their status (tests/test_spec.py checks
both directions, tests/problem_observer.py checks that a test sees each one).

To add a type: add a member here (kebab-case slug, status, title; in `_GENERIC` too if
it is what any error of that status should say); raise it (auth: `HTTPProblem(member)`
or a `DomainError` with `problem = member`; gateway: `falcon.HTTP...(code=member)` or
`write_problem(req, resp, member)`); add its URI to the `ProblemType` enum and its row to
the table in that schema's description in openapi/auth.yaml; and assert it in a test
through tests/problem_observer.py (`assert_problem_type` or `observe`).
"""

from __future__ import annotations

import enum
import logging
from typing import Any

PROBLEM_TYPE_BASE = "https://authgate.dev/problems/"

log = logging.getLogger(__name__)


class ProblemType(enum.StrEnum):
    """A registered problem type: its slug (the value), status (None: the upstream's), title.

    NOTE: a str, so it also fits Falcon's `code` argument, where the gateway names its
    problems; the serializers accept only members, never a plain string.
    """

    slug: str
    status: int | None
    problem_title: str

    def __new__(cls, slug: str, status: int | None, title: str) -> ProblemType:
        """A member whose value is its slug."""
        member = str.__new__(cls, slug)
        member._value_ = slug
        member.slug = slug
        member.status = status
        member.problem_title = title
        return member

    # Generic: a status with nothing more specific to say (see `for_status`).
    BAD_REQUEST = ("bad-request", 400, "Bad Request")
    FORBIDDEN = ("forbidden", 403, "Not allowed")
    NOT_FOUND = ("not-found", 404, "Not Found")
    METHOD_NOT_ALLOWED = ("method-not-allowed", 405, "Method Not Allowed")
    CONTENT_TOO_LARGE = ("content-too-large", 413, "Request body too large")
    URI_TOO_LONG = ("uri-too-long", 414, "URI Too Long")
    UNSUPPORTED_MEDIA_TYPE = ("unsupported-media-type", 415, "Unsupported media type")
    EXPECTATION_FAILED = ("expectation-failed", 417, "Expectation Failed")
    HEADER_FIELDS_TOO_LARGE = ("header-fields-too-large", 431, "Request Header Fields Too Large")
    INTERNAL_ERROR = ("internal-error", 500, "Internal Server Error")
    NOT_IMPLEMENTED = ("not-implemented", 501, "Not Implemented")
    # Requests the spec refuses.
    MALFORMED_JSON = ("malformed-json", 400, "Malformed JSON")
    VALIDATION_ERROR = ("validation-error", 422, "Request validation failed")
    PASSWORD_TOO_LONG = ("password-too-long", 422, "Password is too long")
    # Credentials, tokens and sessions.
    MISSING_TOKEN = ("missing-token", 401, "Unauthorized")
    INVALID_TOKEN = ("invalid-token", 401, "Unauthorized")
    SESSION_REVOKED = ("session-revoked", 401, "Unauthorized")
    INVALID_CREDENTIALS = ("invalid-credentials", 401, "Invalid email or password")
    INACTIVE_USER = ("inactive-user", 403, "Account is inactive")
    LOGIN_THROTTLED = ("login-throttled", 429, "Too many failed logins")
    INVALID_REFRESH_TOKEN = ("invalid-refresh-token", 401, "Invalid refresh token")
    REFRESH_TOKEN_ROTATED = ("refresh-token-rotated", 409, "Refresh token was just rotated")
    INVALID_RESET_TOKEN = ("invalid-reset-token", 400, "Invalid or expired reset token")
    WRONG_PASSWORD = ("wrong-password", 400, "Current password is wrong")
    INVALID_VERIFICATION_TOKEN = (
        "invalid-verification-token",
        400,
        "Invalid or expired verification token",
    )
    EMAIL_NOT_VERIFIED = ("email-not-verified", 403, "Email address not verified")
    # Users.
    REGISTRATION_DISABLED = ("registration-disabled", 403, "Registration is disabled")
    EMAIL_TAKEN = ("email-taken", 409, "Email already registered")
    USER_NOT_FOUND = ("user-not-found", 404, "User not found")
    LAST_SUPERUSER = ("last-superuser", 409, "Cannot remove the last active superuser")
    # Sessions and the second factor.
    SESSION_NOT_FOUND = ("session-not-found", 404, "Session not found")
    MFA_REQUIRED = ("mfa-required", 401, "Second factor required")
    INVALID_MFA_TOKEN = ("invalid-mfa-token", 401, "Invalid or expired MFA token")
    INVALID_MFA_CODE = ("invalid-mfa-code", 401, "Invalid code")
    WRONG_MFA_CODE = ("wrong-mfa-code", 400, "The code is wrong")
    MFA_ALREADY_ENABLED = ("mfa-already-enabled", 409, "A second factor is already enabled")
    MFA_NOT_ENABLED = ("mfa-not-enabled", 409, "No second factor is enabled")
    MFA_ENROLMENT_NOT_STARTED = ("mfa-enrolment-not-started", 409, "No pending enrolment")
    # OAuth clients (the admin API; the protocol endpoints answer in RFC 6749's format).
    OAUTH_CLIENT_NOT_FOUND = ("oauth-client-not-found", 404, "OAuth client not found")
    OAUTH_CLIENT_IS_PUBLIC = ("oauth-client-is-public", 409, "A public client has no secret")
    # The gateway's internal revocation feed.
    INVALID_INTERNAL_TOKEN = ("invalid-internal-token", 401, "Unauthorized")
    # The services' own health.
    NOT_READY = ("not-ready", 503, "Service Unavailable")
    DATABASE_UNAVAILABLE = ("database-unavailable", 503, "Service Unavailable")
    RESPONSE_CONTRACT_VIOLATION = ("response-contract-violation", 500, "Internal Server Error")
    # The gateway's own.
    INSUFFICIENT_SCOPE = ("insufficient-scope", 403, "Insufficient scope")
    RATE_LIMITED = ("rate-limited", 429, "Too Many Requests")
    RATE_LIMIT_UNAVAILABLE = ("rate-limit-unavailable", 503, "Service Unavailable")
    SESSION_CHECK_UNAVAILABLE = ("session-check-unavailable", 503, "Service Unavailable")
    KEYS_UNAVAILABLE = ("keys-unavailable", 503, "Service Unavailable")
    UPSTREAM_UNAVAILABLE = ("upstream-unavailable", 503, "Service Unavailable")
    UPSTREAM_UNREACHABLE = ("upstream-unreachable", 502, "Bad Gateway")
    UPSTREAM_FAILED = ("upstream-failed", 502, "Bad Gateway")
    UPSTREAM_TIMEOUT = ("upstream-timeout", 504, "Gateway Timeout")
    UPSTREAM_ERROR = ("upstream-error", None, "Upstream error")

    @property
    def uri(self) -> str:
        """The `type` member of the problem document."""
        return PROBLEM_TYPE_BASE + self.slug

    @classmethod
    def for_status(cls, status: int) -> ProblemType:
        """The generic type of an error that names only its status (e.g. Falcon's 404).

        A status without one is a bug (logged): INTERNAL_ERROR, and the caller answers
        with its status, 500, instead.
        """
        generic = _GENERIC.get(status)
        if generic is None:
            log.error("no problem type is registered for status %d", status)
            return cls.INTERNAL_ERROR
        return generic


_GENERIC: dict[int, ProblemType] = {
    member.status: member
    for member in (
        ProblemType.BAD_REQUEST,
        ProblemType.FORBIDDEN,
        ProblemType.NOT_FOUND,
        ProblemType.METHOD_NOT_ALLOWED,
        ProblemType.CONTENT_TOO_LARGE,
        ProblemType.URI_TOO_LONG,
        ProblemType.UNSUPPORTED_MEDIA_TYPE,
        ProblemType.EXPECTATION_FAILED,
        ProblemType.HEADER_FIELDS_TOO_LARGE,
        ProblemType.INTERNAL_ERROR,
        ProblemType.NOT_IMPLEMENTED,
        # NOTE: only the gateway answers these two, and always about its upstream.
        ProblemType.UPSTREAM_FAILED,
        ProblemType.UPSTREAM_TIMEOUT,
    )
    if member.status is not None
}


def problem_document(
    problem: ProblemType,
    *,
    status: int | None = None,
    detail: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The RFC 9457 members both services send; `status` only for a type without its own."""
    code = problem.status if problem.status is not None else status
    if code is None:
        raise ValueError(f"{problem.slug} takes its status from the caller")
    body: dict[str, Any] = {"type": problem.uri, "title": problem.problem_title, "status": code}
    if detail:
        body["detail"] = detail
    if request_id:
        body["request_id"] = request_id
    return body
