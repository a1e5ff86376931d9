"""Schemathesis hooks for openapi/auth.yaml: the rules JSON Schema cannot state.

Loaded through `hooks` in schemathesis.toml, so `st run` from the repository root and the
contract tests (contract_support.load_config) apply the same rule.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

from auth_service.services.emails import is_email_address
from auth_service.services.oauth_clients import (
    CLIENT_TYPES,
    OIDC_SCOPES,
    ClientMetadata,
    metadata_problems,
    parse_scopes,
)

# bcrypt's limit is 72 *bytes* of UTF-8; JSON Schema's maxLength counts characters, so
# the spec can only say it in prose (NewPassword's description): a password of at most 72
# characters but more bytes is a 422 naming the field, never truncated.
NEW_PASSWORD_FIELDS = ("password", "new_password")
BCRYPT_MAX_BYTES = 72


def over_bcrypt_limit(body: Any) -> set[str]:
    """The new-password fields of a request body longer than 72 bytes of UTF-8."""
    if not isinstance(body, dict):
        return set()
    return {
        name
        for name in NEW_PASSWORD_FIELDS
        if isinstance(body.get(name), str)
        and len(body[name].encode("utf-8", "surrogatepass")) > BCRYPT_MAX_BYTES
    }


def named_fields(response: Any) -> set[str]:
    """The fields a problem+json answer names in `errors`."""
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError):
        return set()
    return {error.get("field") for error in errors if isinstance(error, dict)}


def unaddressable_email(body: Any) -> set[str]:
    """`email` when it is a string the service's address check refuses.

    `format: idn-email` is that check (auth_service/services/emails.py, email-validator);
    Schemathesis generates RFC 6531 strings by its own rules, and some (a local part with
    an unassigned code point, a one-label domain) are refused there.
    """
    if not isinstance(body, dict) or not isinstance(body.get("email"), str):
        return set()
    return set() if is_email_address(body["email"]) else {"email"}


def broken_client_rules(case: Any) -> set[str]:
    """The fields of an OAuth client registration that break a documented rule.

    The rules of create_oauth_client's description compare fields (grants against the
    client type, redirect URIs against the grants), parse URIs, and check scopes against
    the deployment's OAUTH_API_SCOPES (the services under test inherit this process's
    environment): JSON Schema states none of that. Checked by the service's own rules; a
    replacement does not say its client's type, so either type's breaches count.
    """
    body = case.body
    if not isinstance(body, dict):
        return set()
    operation = case.operation.definition.raw.get("operationId")
    if operation not in ("create_oauth_client", "replace_oauth_client"):
        return set()
    allowed = (*OIDC_SCOPES, *parse_scopes(os.environ.get("OAUTH_API_SCOPES", "")))
    types = [body.get("client_type")] if operation == "create_oauth_client" else CLIENT_TYPES
    try:
        metadata = ClientMetadata(
            name=body["name"],
            redirect_uris=body.get("redirect_uris", []),
            grant_types=body["grant_types"],
            scopes=body.get("scopes", []),
        )
        return {
            field
            for client_type in types
            for field, _, _ in metadata_problems(str(client_type), metadata, allowed)
        }
    except (KeyError, TypeError, AttributeError):
        return set()


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except the documented 422s JSON Schema cannot state exactly:
    a password over bcrypt's 72 bytes, an email the address check refuses, an OAuth
    client registration that breaks a rule of create_oauth_client.

    They are dropped only when the problem names such a field.
    """
    refused = getattr(failure, "code", None) == "ST202" and response.status_code == 422
    documented = (
        over_bcrypt_limit(case.body) | unaddressable_email(case.body) | broken_client_rules(case)
    )
    return not (refused and documented and documented & named_fields(response))
