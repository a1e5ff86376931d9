"""authgate_common.claims: the three token kinds, read one way in both services."""

from __future__ import annotations

from typing import Any

import pytest

from authgate_common.claims import Caller, InvalidClaims, caller, parse_scope

GOOD = {"sub": "8d0f2c1e-0000-4000-8000-000000000001", "sid": "s-1", "role": "admin"}
OAUTH_USER = {**GOOD, "client_id": "dashboard", "scope": "openid profile orders:read"}
CLIENT = {"sub": "billing-bot", "client_id": "billing-bot", "scope": "orders:read orders:write"}


def test_caller() -> None:
    assert caller(GOOD) == Caller(user_id=GOOD["sub"], session_id="s-1", role="admin")


def test_first_party_token_has_no_client_and_no_scopes() -> None:
    who = caller(GOOD)
    assert (who.client_id, who.scopes) == (None, ())


def test_oauth_user_token() -> None:
    assert caller(OAUTH_USER) == Caller(
        user_id=GOOD["sub"],
        session_id="s-1",
        role="admin",
        client_id="dashboard",
        scopes=("openid", "profile", "orders:read"),
    )


def test_client_credential_token() -> None:
    assert caller(CLIENT) == Caller(
        user_id=None,
        session_id=None,
        role=None,
        client_id="billing-bot",
        scopes=("orders:read", "orders:write"),
    )


@pytest.mark.parametrize("name", ["sub", "sid", "role"])
@pytest.mark.parametrize("value", [None, "", 7, "has space", "line\r\nbreak", "x" * 257])
def test_missing_or_unsafe_claims_are_refused(name: str, value: Any) -> None:
    claims = {**GOOD, name: value}
    if value is None:
        del claims[name]
    with pytest.raises(InvalidClaims, match=name):
        caller(claims)


@pytest.mark.parametrize("name", ["sub", "sid", "role", "client_id"])
@pytest.mark.parametrize("value", ["", 7, "has space", "line\r\nbreak", "x" * 257])
def test_unsafe_oauth_user_claims_are_refused(name: str, value: Any) -> None:
    with pytest.raises(InvalidClaims, match=name):
        caller({**OAUTH_USER, name: value})


def test_oauth_user_token_needs_its_role() -> None:
    claims = dict(OAUTH_USER)
    del claims["role"]
    with pytest.raises(InvalidClaims, match="role"):
        caller(claims)


def test_client_token_must_name_itself() -> None:
    # SECURITY: client_id without a session, yet a user's sub: not a kind we issue.
    with pytest.raises(InvalidClaims, match="sub"):
        caller({**CLIENT, "sub": GOOD["sub"]})


def test_client_token_carries_no_role() -> None:
    with pytest.raises(InvalidClaims, match="role"):
        caller({**CLIENT, "role": "admin"})


def test_first_party_token_with_a_scope_is_refused() -> None:
    with pytest.raises(InvalidClaims, match="scope"):
        caller({**GOOD, "scope": "orders:read"})


@pytest.mark.parametrize(
    "scope",
    [
        None,
        7,
        ["orders:read"],
        " orders:read",
        "orders:read ",
        "a  b",
        "a\tb",
        'say"hi',
        "back\\slash",
        "line\nbreak",
        "caf\u00e9",
        "x" * 4097,
    ],
)
def test_malformed_scopes_are_refused(scope: Any) -> None:
    for claims in (OAUTH_USER, CLIENT):
        bad = {**claims, "scope": scope}
        if scope is None:
            del bad["scope"]
        with pytest.raises(InvalidClaims, match="scope"):
            caller(bad)


def test_empty_scope_is_no_scopes() -> None:
    assert caller({**CLIENT, "scope": ""}).scopes == ()


def test_parse_scope_drops_repeats_keeps_order() -> None:
    assert parse_scope("b a b c a") == ("b", "a", "c")
    assert parse_scope("!#[]~") == ("!#[]~",)
