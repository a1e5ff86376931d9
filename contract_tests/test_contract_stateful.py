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
import requests
from contract_support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    USER_EMAIL,
    USER_PASSWORD,
    Server,
    login,
    operation_id,
    stateful_settings,
)
from hypothesis.errors import FlakyStrategyDefinition
from referee import openapi_core_agrees
from schemathesis.engine.errors import is_inconsistent_replay
from schemathesis.generation.stateful import run_state_machine_as_test

# Links the walk must really follow (link names in openapi/auth.yaml), one of each group:
# a refresh token from login used by the next call, a created user's id used by the next.
REQUIRED_LINKS = (
    {"RefreshSession", "LogoutSession", "RefreshAgain"},
    {"GetCreatedUser", "UpdateCreatedUser", "DeleteCreatedUser"},
)
# NOTE: oauth too: its operations have no links, and its sign-in forms need a browser's
# cookie and CSRF token that no walk can carry (test_contract_live covers each one).
WALK_EXCLUDED_TAGS = ("sessions", "mfa", "oauth")
# Operations that could take away the accounts whose tokens the suite runs on.
ACCOUNT_CHANGES = frozenset({"delete_user", "update_user", "end_user_sessions", "reset_user_mfa"})
# Fresh walks tried when Hypothesis finds a walk's choices changed under it (see walk()).
WALK_ATTEMPTS = 5


@pytest.fixture(scope="module")
def contract_user_ids(auth_service: Server) -> frozenset[str]:
    """The ids of the contract user and admin."""
    ids = set()
    for email, password in ((USER_EMAIL, USER_PASSWORD), (ADMIN_EMAIL, ADMIN_PASSWORD)):
        token = login(auth_service.url, email, password)
        me = requests.get(
            f"{auth_service.url}/api/v1/auth/me",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert me.status_code == 200, me.text
        ids.add(me.json()["id"])
    return frozenset(ids)


def contract_machine(schema: Any, protected_ids: frozenset[str]) -> Any:
    """The schema's state machine with a login that succeeds and fresh emails."""
    # NOTE: the walk is about the spec's session and user links; the sessions and MFA
    # operations (covered by test_contract_live and tests/) would dilute a
    # bounded CI walk until it never reaches them.
    for tag in WALK_EXCLUDED_TAGS:
        schema = schema.exclude(tag=tag)
    base = schema.as_state_machine()

    class ContractMachine(base):  # type: ignore[misc, valid-type]
        """Every step refereed; links followed are recorded."""

        followed: ClassVar[set[str]] = set()

        def step(self, input: Any) -> Any:
            if input.transition is not None and input.is_applied:
                self.followed.add(input.transition.id)
            return super().step(input)

        def before_call(self, case: Any) -> None:
            if (
                operation_id(case) in ACCOUNT_CHANGES
                and case.path_parameters.get("user_id") in protected_ids
            ):
                # Links Schemathesis infers (GET /auth/me -> DELETE /users/{id}) hand the
                # contract user's own id to admin operations; deleting or renaming it
                # would end every later test's login. Another id keeps the step (a 404).
                case.path_parameters = {**case.path_parameters, "user_id": str(uuid.uuid4())}
            negative = case.meta is not None and not case.meta.generation.mode.is_positive
            if negative or not isinstance(case.body, dict):
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


def walk(machine: Any) -> None:
    """Run the state machine; start a fresh walk when only Hypothesis' replay failed.

    Which rules a step can take depends on what the server answered earlier (a bundle
    holds a token only after a 200), so Hypothesis may find that the same choices
    led elsewhere on a second pass: FlakyStrategyDefinition, or an assertion inside
    its data tree. That is no finding about the API; Schemathesis' own engine starts a
    new suite then, and so does this. A check failure is a FailureGroup and fails here.
    """
    for attempt in range(1, WALK_ATTEMPTS + 1):
        try:
            run_state_machine_as_test(machine, settings=stateful_settings())
        except (FlakyStrategyDefinition, AssertionError) as error:
            flaky = isinstance(error, FlakyStrategyDefinition) or is_inconsistent_replay(error)
            if not flaky or attempt == WALK_ATTEMPTS:
                raise
        else:
            return


@pytest.mark.parametrize("service", ["auth_api_schema", "gateway_api_schema"])
def test_linked_sequences_honour_the_spec(
    service: str, contract_user_ids: frozenset[str], request: pytest.FixtureRequest
) -> None:
    """Walk the links through the auth service directly and through the gateway."""
    machine = contract_machine(request.getfixturevalue(service), contract_user_ids)
    walk(machine)
    walked = "\n".join(sorted(machine.followed))
    for group in REQUIRED_LINKS:
        assert any(link in walked for link in group), f"none of {sorted(group)} in:\n{walked}"
