"""The spec is the routing table: drift either way stops start-up, and the app matches the spec."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon
import pytest

from auth_service.app import create_app
from auth_service.routing import RoutingDrift, add_spec_routes, check_drift, responders
from auth_service.settings import DEFAULT_SPEC_PATH, Settings
from auth_service.spec import Contract

NON_SPEC_ROUTES = {"/docs/assets/{name}"}


def routes(app: falcon.App) -> Iterator[tuple[str, Any]]:
    """Every (URI template, resource) in the app's router."""
    pending = list(app._router._roots)  # NOTE: falcon has no public route listing
    while pending:
        node = pending.pop()
        if node.resource is not None:
            yield node.uri_template, node.method_map
        pending.extend(node.children)


def spec_methods(method_map: dict[str, Any]) -> dict[str, str]:
    """The methods served by our responders (not Falcon's 405/OPTIONS defaults): name by method."""
    served = {}
    for method, responder in method_map.items():
        owner = getattr(responder, "__self__", None)
        if owner is not None and type(owner).__module__.startswith("auth_service.operations"):
            served[method] = responder.__name__
    return served


@pytest.fixture(scope="module")
def app(sqlite_database: str, var_dir: Path, contract: Contract) -> falcon.App:
    """The real app (routing does not depend on the database, so one backend is enough)."""
    settings = Settings(
        database_url=sqlite_database, var_dir=var_dir, spec_path=DEFAULT_SPEC_PATH, bcrypt_rounds=4
    )
    return create_app(settings, contract=contract)


@pytest.fixture(scope="module")
def handlers(app: falcon.App) -> list[object]:
    """The real operation handler objects the app was built with."""
    found: dict[int, object] = {}
    for _, method_map in routes(app):
        for responder in method_map.values():
            owner = getattr(responder, "__self__", None)
            if owner is not None and type(owner).__module__.startswith("auth_service.operations"):
                found[id(owner)] = owner
    return list(found.values())


def test_app_routes_are_exactly_the_spec_operations(app: falcon.App, contract: Contract) -> None:
    expected = {(op.path, op.method): op.operation_id for op in contract.operations}
    served = {}
    for template, method_map in routes(app):
        if template in NON_SPEC_ROUTES:
            continue
        for method, name in spec_methods(method_map).items():
            served[(template, method)] = name
    assert served == expected
    assert len(expected) == len({op.operation_id for op in contract.operations}) >= 19


def test_every_handler_method_is_an_operation(handlers: list[object], contract: Contract) -> None:
    available = responders(handlers)
    assert set(available) == {op.operation_id for op in contract.operations}
    check_drift(contract, available)  # no exception


def without_operation(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    del changed["paths"][path][method]
    if not changed["paths"][path]:
        del changed["paths"][path]
    return changed


def test_responder_without_operation_is_drift(contract: Contract, handlers: list[object]) -> None:
    smaller = Contract(without_operation(contract.document, "/healthz", "get"))
    with pytest.raises(RoutingDrift, match="responders without an operation: healthz"):
        add_spec_routes(falcon.App(), smaller, handlers)


def test_operation_without_responder_is_drift(contract: Contract, handlers: list[object]) -> None:
    larger = copy.deepcopy(contract.document)
    operation = copy.deepcopy(larger["paths"]["/healthz"]["get"])
    operation["operationId"] = "frobnicate"
    larger["paths"]["/frobnicate"] = {"get": operation}
    with pytest.raises(RoutingDrift, match="operations without a responder: frobnicate"):
        add_spec_routes(falcon.App(), Contract(larger), handlers)


def test_renamed_operation_is_drift_both_ways(contract: Contract, handlers: list[object]) -> None:
    renamed = copy.deepcopy(contract.document)
    renamed["paths"]["/api/v1/auth/me"]["get"]["operationId"] = "read_me"
    with pytest.raises(RoutingDrift) as caught:
        add_spec_routes(falcon.App(), Contract(renamed), handlers)
    assert "operations without a responder: read_me" in str(caught.value)
    assert "responders without an operation: get_me" in str(caught.value)


class Stray:
    """A handler with one public method that no operation names."""

    def purge_everything(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Not in the spec."""

    def _helper(self) -> None:
        """Private: never a responder."""


class PrivateOnly:
    """Private helpers are not responders."""

    def _helper(self) -> None:
        """Private."""


def test_stray_public_method_is_drift(contract: Contract, handlers: list[object]) -> None:
    app = falcon.App()
    with pytest.raises(RoutingDrift, match="responders without an operation: purge_everything"):
        add_spec_routes(app, contract, [*handlers, Stray()])
    add_spec_routes(falcon.App(), contract, [*handlers, PrivateOnly()])  # no exception


def test_responder_defined_twice_is_drift(contract: Contract, handlers: list[object]) -> None:
    with pytest.raises(RoutingDrift, match="defined twice"):
        add_spec_routes(falcon.App(), contract, [*handlers, handlers[0]])


def test_check_drift_names_every_side(contract: Contract) -> None:
    def responder(req: falcon.Request, resp: falcon.Response) -> None:
        """A stand-in."""

    available = {op.operation_id: responder for op in contract.operations}
    check_drift(contract, available)
    del available["login"]
    available["extra_one"] = responder
    with pytest.raises(RoutingDrift) as caught:
        check_drift(contract, available)
    message = str(caught.value)
    assert "operations without a responder: login" in message
    assert "responders without an operation: extra_one" in message


def test_responders_take_the_spec_parameters(handlers: list[object], contract: Contract) -> None:
    """Each responder accepts exactly req, resp and the operation's path parameters."""
    available = responders(handlers)
    for op in contract.operations:
        params = list(inspect.signature(available[op.operation_id]).parameters)
        path_params = [p.name for p in op.parameters if p.location == "path"]
        assert params == ["req", "resp", *path_params], op.operation_id
