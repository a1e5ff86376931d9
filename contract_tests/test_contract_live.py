"""Schemathesis property tests of every operation, against both services running for real.

Schemathesis 4's examples, coverage and fuzzing phases (schemathesis.toml) send valid and
invalid requests to the auth service directly and through the gateway. Every check it
has runs on every answer (a documented status, its content type, headers and schema,
never a 5xx, invalid input refused with a documented 4xx, valid input never refused as
invalid, missing or bad tokens refused, undeclared methods 405), and openapi-core must
reach the service's verdict on every request and response (referee.py).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from referee import openapi_core_agrees

auth_schema = schemathesis.pytest.from_fixture("auth_api_schema")
# NOTE: the internal operations are the auth service's alone (the gateway answers 404,
# test_route_coverage checks it); the lazy schema applies its own filters, not the fixture's.
gateway_schema = schemathesis.pytest.from_fixture("gateway_api_schema").exclude(tag="internal")


@auth_schema.parametrize()
def test_auth_service_honours_the_spec(case: Any) -> None:
    """Every operation of the auth service, valid and invalid input."""
    case.call_and_validate(additional_checks=[openapi_core_agrees])


@gateway_schema.parametrize()
def test_gateway_honours_the_spec(case: Any) -> None:
    """Every operation through the gateway, valid and invalid input."""
    case.call_and_validate(additional_checks=[openapi_core_agrees])
