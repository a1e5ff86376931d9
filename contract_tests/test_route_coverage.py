"""Every spec operation has a responder, and every route a spec operation, in both services."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
import yaml
from contract_support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    INTERNAL_TOKEN,
    SESSION_OPERATIONS,
    SESSIONS_EMAIL,
    SESSIONS_PASSWORD,
    SPEC_PATH,
    Server,
    is_internal,
    login,
)

from authgate_common.problem_types import ProblemType

SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
OPERATIONS = [
    (method.upper(), path, op["operationId"])
    for path, item in SPEC["paths"].items()
    for method, op in item.items()
    if method in METHODS
]
SAMPLE_ID = "00000000-0000-4000-8000-000000000000"


def concrete(path: str) -> str:
    """A request path for a template (every parameter is a user, session or client id)."""
    return re.sub(r"\{[^}]+\}", SAMPLE_ID, path)


def test_auth_service_routes_equal_the_spec() -> None:
    """The auth service's own drift check: no operation without a responder, and back."""
    from auth_service.app import create_app  # noqa: F401  (imported for its wiring)
    from auth_service.routing import RoutingDrift, check_drift
    from auth_service.spec import Contract

    contract = Contract.from_file(SPEC_PATH)
    declared = {op.operation_id for op in contract.operations}
    assert declared == {operation_id for _, _, operation_id in OPERATIONS}
    with pytest.raises(RoutingDrift, match="operations without a responder: get_me"):
        check_drift(contract, {name: print for name in declared - {"get_me"}})
    with pytest.raises(RoutingDrift, match="responders without an operation: stray"):
        check_drift(contract, {name: print for name in declared | {"stray"}})


@pytest.mark.parametrize("service", ["auth_service", "gateway_service"])
@pytest.mark.parametrize(
    ("method", "path", "operation_id"), OPERATIONS, ids=[o[2] for o in OPERATIONS]
)
def test_every_spec_operation_is_routable(
    service: str, method: str, path: str, operation_id: str, request: pytest.FixtureRequest
) -> None:
    """Each operation reaches a responder: never a routing 404 or 405, from either service."""
    server: Server = request.getfixturevalue(service)
    operation = SPEC["paths"][path][method.lower()]
    headers = {}
    if is_internal(operation):
        headers["X-Internal-Token"] = INTERNAL_TOKEN
        if service == "gateway_service":
            # SECURITY: for the gateway alone; clients get the gateway's own 404.
            refused = requests.request(method, server.url + path, headers=headers, timeout=30)
            assert refused.status_code == 404, refused.text
            assert refused.json()["type"] == ProblemType.NOT_FOUND.uri, refused.text
            return
    elif operation["security"]:
        # NOTE: ending every session of the admin would log out other tests' cached tokens.
        email, password = (
            (SESSIONS_EMAIL, SESSIONS_PASSWORD)
            if operation_id in SESSION_OPERATIONS
            else (ADMIN_EMAIL, ADMIN_PASSWORD)
        )
        headers["Authorization"] = f"Bearer {login(server.url, email, password)}"
    body = {} if "requestBody" in operation else None
    response = requests.request(
        method, server.url + concrete(path), json=body, headers=headers, timeout=30
    )
    assert str(response.status_code) in operation["responses"], (
        f"{operation_id}: undocumented {response.status_code} (not routed?)"
    )
    if response.status_code == 404:
        # A 404 is only right when it is the operation's own "no such user" (or session,
        # or OAuth client).
        assert response.json()["type"].endswith(
            ("/user-not-found", "/session-not-found", "/oauth-client-not-found")
        ), response.text


@pytest.mark.parametrize("service", ["auth_service", "gateway_service"])
def test_paths_outside_the_spec_are_not_served(
    service: str, request: pytest.FixtureRequest
) -> None:
    """No route beyond the spec: an undeclared path is a problem+json 404 (docs assets aside)."""
    server: Server = request.getfixturevalue(service)
    for path in ("/api/v1/undeclared", "/api/v1/auth/undeclared", "/admin", "/api/v2/users"):
        response = requests.get(server.url + path, timeout=30)
        assert response.status_code in (401, 404), f"{path}: {response.status_code}"
        assert response.headers["Content-Type"].startswith("application/problem+json"), path
