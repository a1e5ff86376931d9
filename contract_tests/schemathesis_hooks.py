"""Schemathesis hooks for openapi/auth.yaml: the one rule JSON Schema cannot state.

Loaded through `hooks` in schemathesis.toml, so `st run` from the repository root and the
contract tests (contract_support.load_config) apply the same rule.
"""

from __future__ import annotations

from typing import Any

import schemathesis

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


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except a 422 for a password over bcrypt's 72 bytes.

    Only that documented refusal is dropped, and only when the problem names such a field.
    """
    refused = getattr(failure, "code", None) == "ST202" and response.status_code == 422
    too_long = over_bcrypt_limit(case.body)
    return not (refused and too_long and too_long & named_fields(response))
