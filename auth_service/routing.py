"""Routes come from the spec: each operationId names the responder that serves it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import falcon

from auth_service.spec import Contract


class RoutingDrift(RuntimeError):
    """The spec and the responders disagree; start-up stops here."""


def responders(handlers: Iterable[object]) -> dict[str, Callable[..., Any]]:
    """Every public method of the operation handlers, by name (= operationId)."""
    found: dict[str, Callable[..., Any]] = {}
    for handler in handlers:
        for name, method in inspect.getmembers(handler, inspect.ismethod):
            if name.startswith("_"):
                continue
            if name in found:
                raise RoutingDrift(f"responder {name!r} is defined twice")
            found[name] = method
    return found


def check_drift(contract: Contract, available: dict[str, Callable[..., Any]]) -> None:
    """Refuse an operation without a responder, or a responder without an operation."""
    declared = {op.operation_id for op in contract.operations}
    missing = sorted(declared - available.keys())
    orphans = sorted(available.keys() - declared)
    problems = []
    if missing:
        problems.append(f"operations without a responder: {', '.join(missing)}")
    if orphans:
        problems.append(f"responders without an operation: {', '.join(orphans)}")
    if problems:
        raise RoutingDrift("; ".join(problems))


def add_spec_routes(
    app: falcon.App[Any, falcon.Response], contract: Contract, handlers: Iterable[object]
) -> None:
    """Add one Falcon route per spec path, its on_<method> being the named responder."""
    available = responders(handlers)
    check_drift(contract, available)
    resources: dict[str, SimpleNamespace] = {}
    for op in contract.operations:
        resource = resources.setdefault(op.path, SimpleNamespace())
        setattr(resource, f"on_{op.method.lower()}", available[op.operation_id])
    for path, resource in resources.items():
        app.add_route(path, resource)
