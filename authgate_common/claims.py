"""The access-token claims both services rely on, checked one way in both.

Tokens are verified by python-jose in each service (signature, iss, aud, exp, nbf); this
module then reads the claims that name the caller. A token is one of three kinds (see
the README, "Scopes and client tokens at the gateway"):

- first-party user token (our own login): `sub`, `sid`, `role`; no `client_id`, no `scope`;
- OAuth user token (an app the user signed into): `sub`, `sid`, `role`, `client_id`, `scope`;
- client-credential token (an app acting for itself): `sub` == `client_id`, `scope`;
  no `sid`, no `role`.

Anything else was not issued by us: no default role or session is ever assumed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# SECURITY: these values travel on as upstream header values and log fields: visible
# ASCII only (no space, no control byte that could split or smuggle a header).
_SAFE_VALUE = re.compile(r"^[\x21-\x7e]{1,256}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), joined by single spaces.
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*$")
# SECURITY: the scope becomes an upstream header value; bound it like other headers.
_MAX_SCOPE_LENGTH = 4096


class InvalidClaims(ValueError):
    """A verified token lacks a claim we need, or has one of the wrong shape."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a verified access token speaks for.

    `user_id`, `session_id` and `role` are None exactly for a client-credential token;
    `client_id` is None exactly for a first-party token, whose `scopes` are empty.
    """

    user_id: str | None
    session_id: str | None
    role: str | None
    client_id: str | None = None
    scopes: tuple[str, ...] = ()


def caller(claims: Mapping[str, Any]) -> Caller:
    """The caller named by verified claims; raise InvalidClaims when one is missing or bad."""
    subject = _safe(claims, "sub")
    client_id = _safe(claims, "client_id") if "client_id" in claims else None
    if client_id is None:
        if "scope" in claims:
            raise InvalidClaims("scope")  # first-party tokens carry no scope
        return Caller(user_id=subject, session_id=_safe(claims, "sid"), role=_safe(claims, "role"))
    scopes = _scopes(claims.get("scope"))
    if claims.get("sid") is None:
        # SECURITY: without a session the token can only be the client's own, and then
        # it names the client and nothing else (no role to act with).
        if subject != client_id:
            raise InvalidClaims("sub")
        if "role" in claims:
            raise InvalidClaims("role")
        return Caller(user_id=None, session_id=None, role=None, client_id=client_id, scopes=scopes)
    return Caller(
        user_id=subject,
        session_id=_safe(claims, "sid"),
        role=_safe(claims, "role"),
        client_id=client_id,
        scopes=scopes,
    )


def parse_scope(value: str) -> tuple[str, ...]:
    """The distinct scope tokens of a space-separated scope string, in order; ValueError
    when it breaks RFC 6749 §3.3 (an empty string is no scopes)."""
    if value == "":
        return ()
    if len(value) > _MAX_SCOPE_LENGTH or not _SCOPE.match(value):
        raise ValueError("not a space-separated list of scope tokens")
    return tuple(dict.fromkeys(value.split(" ")))


def _safe(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not _SAFE_VALUE.match(value):
        raise InvalidClaims(name)
    return value


def _scopes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, str):
        raise InvalidClaims("scope")
    try:
        return parse_scope(value)
    except ValueError:
        raise InvalidClaims("scope") from None
