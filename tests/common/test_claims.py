"""authgate_common.claims: every caller claim is required, in both services."""

from __future__ import annotations

from typing import Any

import pytest

from authgate_common.claims import Caller, InvalidClaims, caller

GOOD = {"sub": "8d0f2c1e-0000-4000-8000-000000000001", "sid": "s-1", "role": "admin"}


def test_caller() -> None:
    assert caller(GOOD) == Caller(user_id=GOOD["sub"], session_id="s-1", role="admin")


@pytest.mark.parametrize("name", ["sub", "sid", "role"])
@pytest.mark.parametrize("value", [None, "", 7, "has space", "line\r\nbreak", "x" * 257])
def test_missing_or_unsafe_claims_are_refused(name: str, value: Any) -> None:
    claims = {**GOOD, name: value}
    if value is None:
        del claims[name]
    with pytest.raises(InvalidClaims, match=name):
        caller(claims)
