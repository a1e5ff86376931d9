"""Schemathesis property tests of every operation, against both services running for real.

Valid and invalid requests (DataGenerationMethod.all()) go to the auth service directly
and through the gateway; every response must match the spec: a documented status, its
content type, headers and schema, never a 5xx, invalid input refused with a documented
4xx, valid input never refused as invalid (contract_support.CHECKS).
"""

from __future__ import annotations

from contract_support import CHECKS, PROFILE, lazy_schema
from hypothesis import settings
from schemathesis.models import Case

auth_schema = lazy_schema("auth_api_schema")
gateway_schema = lazy_schema("gateway_api_schema")


@auth_schema.parametrize()
@settings(PROFILE)
def test_auth_service_honours_the_spec(case: Case) -> None:
    """Every operation of the auth service, valid and invalid input."""
    case.call_and_validate(checks=CHECKS, timeout=30)


@gateway_schema.parametrize()
@settings(PROFILE)
def test_gateway_honours_the_spec(case: Case) -> None:
    """Every operation through the gateway, valid and invalid input."""
    case.call_and_validate(checks=CHECKS, timeout=30)
