"""Schemathesis' stateful phase over the spec's links, against both live services.

The links (register -> get_user; login -> refresh/logout; refresh -> refresh/logout;
create_user -> get/update/delete) make real sequences: a refresh token from one answer
is rotated by the next call, a user created is read, changed and deleted, and a deleted
user must be gone (use_after_free) while a created one must be there
(ensure_resource_availability). Every step is also refereed by openapi-core.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest
from contract_support import USER_EMAIL, USER_PASSWORD, operation_id, stateful_settings
from referee import openapi_core_agrees
from schemathesis.generation.stateful import run_state_machine_as_test

# Links the walk must really follow (link names in openapi/auth.yaml): a token from login
# rotated by refresh, a created user read back.
REQUIRED_LINKS = {"RefreshSession", "GetCreatedUser"}


def contract_machine(schema: Any) -> Any:
    """The schema's state machine with a login that succeeds and fresh emails."""
    base = schema.as_state_machine()

    class ContractMachine(base):  # type: ignore[misc, valid-type]
        """Every step refereed; links followed are recorded."""

        followed: ClassVar[set[str]] = set()

        def step(self, input: Any) -> Any:
            if input.transition is not None and input.is_applied:
                self.followed.add(input.transition.id)
            return super().step(input)

        def before_call(self, case: Any) -> None:
            if not isinstance(case.body, dict) or not (case.meta and case.meta.generation):
                return
            if not case.meta.generation.mode.is_positive:
                return
            if operation_id(case) == "login":
                # Random credentials never log in, so refresh/logout would only ever see
                # tokens that do not exist; a valid login is the contract user's, and
                # every session it starts is rotated and ended by the linked steps.
                case.body = {"email": USER_EMAIL, "password": USER_PASSWORD}
            elif "email" in case.body:
                # A fresh address per step: an email taken by an earlier scenario would
                # turn the same generated step from a 201 into a 409 and change the walk.
                case.body = {**case.body, "email": f"{uuid.uuid4().hex}@example.com"}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            kwargs.pop("additional_checks", None)
            super().validate_response(
                response, case, additional_checks=[openapi_core_agrees], **kwargs
            )

    return ContractMachine


@pytest.mark.parametrize("service", ["auth_api_schema", "gateway_api_schema"])
def test_linked_sequences_honour_the_spec(service: str, request: pytest.FixtureRequest) -> None:
    """Walk the links through the auth service directly and through the gateway."""
    machine = contract_machine(request.getfixturevalue(service))
    run_state_machine_as_test(machine, settings=stateful_settings())
    followed = {link for link in REQUIRED_LINKS if any(link in t for t in machine.followed)}
    assert followed == REQUIRED_LINKS, sorted(machine.followed)
