"""Which problem types the tests saw real services send (imported, not a conftest).

Every test that checks a problem's `type` does it through `assert_problem_type`, which
records the type. tests/test_problem_types_observed.py, run last, then fails when a type
in the registry (authgate_common/problem_types.py), and so in the spec, was never seen:
a type no test observes is a promise nobody checks. That check needs the whole suite:
the conftest hooks below tell it whether every test file ran, nothing was deselected and
nothing else failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authgate_common.problem_types import ProblemType

PROBLEM_JSON = "application/problem+json"
TESTS_DIR = Path(__file__).parent
OBSERVER_MODULE = "test_problem_types_observed.py"

OBSERVED: set[ProblemType] = set()
_deselected: list[pytest.Item] = []
_collected_files: set[Path] = set()
_servers_missing: list[str] = []


def observe(body: dict[str, Any], problem: ProblemType, status: int | None = None) -> None:
    """Assert that a problem document is of this registered type (and status); record it."""
    expected = problem.status if problem.status is not None else status
    assert expected is not None, f"{problem.slug} needs the status it was relayed with"
    assert body["type"] == problem.uri, body
    assert body["status"] == expected, body
    assert body["title"] == problem.problem_title, body
    OBSERVED.add(problem)


def assert_problem_type(response: Any, problem: ProblemType, status: int | None = None) -> Any:
    """Assert an HTTP answer is a problem of this type; its body.

    `response` is a `requests.Response` or a `falcon.testing.Result`.
    """
    expected = problem.status if problem.status is not None else status
    assert response.status_code == expected, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body = response.json() if callable(response.json) else response.json
    observe(body, problem, expected)
    return body


def suite_incomplete_reason(session: pytest.Session) -> str | None:
    """Why this run cannot judge which types the suite observes (None: it can)."""
    expected = {path.resolve() for path in TESTS_DIR.rglob("test_*.py")}
    missing = sorted(str(path.relative_to(TESTS_DIR)) for path in expected - _collected_files)
    if missing:
        return f"only part of tests/ ran (not {', '.join(missing[:3])}...)"
    if _deselected:
        return f"{len(_deselected)} tests were deselected"
    if session.testsfailed:
        return "other tests failed"
    if _servers_missing:
        return f"{len(_servers_missing)} tests were skipped for a missing server"
    return None


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Remember deselection (-k, -m, --lf): such a run does not see every type."""
    _deselected.extend(items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember tests skipped because PostgreSQL or Redis is down (see conftest.py)."""
    if report.skipped and "is not reachable" in str(report.longrepr):
        _servers_missing.append(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Note which test files were collected, and run the observer module's test last."""
    _collected_files.update(item.path.resolve() for item in items)
    last = [item for item in items if item.path.name == OBSERVER_MODULE]
    items[:] = [item for item in items if item.path.name != OBSERVER_MODULE] + last
