"""The referee can fail: real exchanges with the auth service, one side swapped.

referee.openapi_core_agrees runs on every request of the contract suite; a check that
never fails proves nothing, so each verdict it must reach is shown here on a request the
service really answered, with the other exchange's answer put in its place.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import requests
from contract_support import ADMIN_EMAIL, ADMIN_PASSWORD, Server, login
from referee import openapi_core_agrees
from schemathesis import Response


def list_users(server: Server, query: str) -> Response:
    """GET /api/v1/users?<query> as the admin, as Schemathesis sees the answer."""
    token = login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD)
    answer = requests.get(
        f"{server.url}/api/v1/users?{query}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return Response.from_any(answer)


def judge(response: Response) -> None:
    """Run the referee on one exchange (no body, so the case carries none)."""
    openapi_core_agrees(None, response, SimpleNamespace(body=None))


def swapped(response: Response, other: Response, **changes: Any) -> Response:
    """`response`'s request with `other`'s answer."""
    for name in ("status_code", "headers", "content"):
        setattr(response, name, changes.get(name, getattr(other, name)))
    return response


def test_agreeing_verdicts_pass(auth_service: Server) -> None:
    valid = list_users(auth_service, "limit=5")
    invalid = list_users(auth_service, "limit=1000")
    assert (valid.status_code, invalid.status_code) == (200, 422)
    judge(valid)
    judge(invalid)


def test_valid_request_refused_fails(auth_service: Server) -> None:
    valid = list_users(auth_service, "limit=5")
    refusal = list_users(auth_service, "limit=1000")
    with pytest.raises(AssertionError, match="calls the request valid; the service refused"):
        judge(swapped(valid, refusal))


def test_invalid_request_accepted_fails(auth_service: Server) -> None:
    invalid = list_users(auth_service, "limit=1000")
    page = list_users(auth_service, "limit=5")
    with pytest.raises(AssertionError, match=r"calls the request invalid.*accepted it with 200"):
        judge(swapped(invalid, page))


def test_response_breaking_the_spec_fails(auth_service: Server) -> None:
    page = list_users(auth_service, "limit=5")
    with pytest.raises(AssertionError, match="openapi-core rejects the 200 response"):
        judge(swapped(page, page, content=b'{"items": []}'))
