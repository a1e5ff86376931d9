"""Email addresses: one syntax check and one normal form for every path that takes one."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from auth_service import errors


def canonical_email(email: str, *, field: str = "email") -> str:
    """The stored form of an address; InvalidEmail (a 422 naming `field`) when it is none.

    email-validator checks the syntax (no DNS: deliverability checks are off, so a request
    never waits on a resolver) and normalises the domain with IDNA, so `ADA@Bücher.example`
    and `ada@xn--bcher-kva.example` are one account. The whole address is then lower-cased:
    accounts have always been unique case-insensitively.
    """
    try:
        checked = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError:
        # SECURITY: the library's message quotes the input; the client gets a fixed one.
        raise errors.InvalidEmail(field=field) from None
    return str(checked.normalized).lower()


def lookup_email(email: str) -> str:
    """The form to look an address up by at sign-in and reset: never an error of its own.

    SECURITY: an address that fails the syntax check is looked up like any other, finds
    nobody (new accounts cannot have it) and so gets exactly the answer, and the bcrypt
    work, of an unknown address: the check adds no oracle. Accounts stored before the
    check existed keep signing in under their old trimmed, lower-cased form.
    """
    try:
        return canonical_email(email)
    except errors.InvalidEmail:
        return email.strip().lower()


def smtp_address(email: str) -> str:
    """The address to hand an SMTP server: the domain in ASCII (punycode) when the local
    part is ASCII, so mail to `ada@bücher.example` needs no SMTPUTF8 support; otherwise
    (or for a stored address that no longer passes the check) the address unchanged."""
    try:
        checked = validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return email
    return checked.ascii_email or email
