"""The access-token claims both services rely on, checked one way in both.

Tokens are verified by python-jose in each service (signature, iss, aud, exp, nbf); this
module then reads the claims that name the caller. Every one is required: a token without
`sid` or `role` was not issued by us, so no default role is ever assumed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# SECURITY: these values travel on as upstream header values and log fields: visible
# ASCII only (no space, no control byte that could split or smuggle a header).
_SAFE_VALUE = re.compile(r"^[\x21-\x7e]{1,256}$")


class InvalidClaims(ValueError):
    """A verified token lacks a claim we need, or has one of the wrong shape."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a verified access token speaks for."""

    user_id: str
    session_id: str
    role: str


def caller(claims: Mapping[str, Any]) -> Caller:
    """The caller named by verified claims; raise InvalidClaims when one is missing or bad."""
    values: list[str] = []
    for name in ("sub", "sid", "role"):
        value = claims.get(name)
        if not isinstance(value, str) or not _SAFE_VALUE.match(value):
            raise InvalidClaims(name)
        values.append(value)
    user_id, session_id, role = values
    return Caller(user_id=user_id, session_id=session_id, role=role)
