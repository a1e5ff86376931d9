"""Fixtures for the OAuth provider tests: the auth service's own (tests/auth/conftest.py),
and for the browser tests a headless Chromium per test and the client's redirect URI.

Without chromium and chromium-driver the browser tests are skipped loudly through the
missing-server mechanism of tests/conftest.py (and fail with CI=true).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from browser import (
    Browser,
    Receiver,
    chromium_missing,
    start_browser,
    start_receiver,
    stop_receiver,
)

_AUTH_TESTS = Path(__file__).resolve().parent.parent / "auth"
_GATEWAY_TESTS = _AUTH_TESTS.parent / "gateway"
# NOTE: the helpers of tests/auth (auth_api, smtp_inbox) and tests/gateway
# (gateway_support) import each other by module name.
sys.path.insert(0, str(_GATEWAY_TESTS))
sys.path.insert(0, str(_AUTH_TESTS))
_spec = importlib.util.spec_from_file_location("auth_conftest", _AUTH_TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
_auth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_auth)

contract = _auth.contract
var_dir = _auth.var_dir
sqlite_database = _auth.sqlite_database
migrated_postgres = _auth.migrated_postgres
database_url = _auth.database_url
settings = _auth.settings
make_client = _auth.make_client
client = _auth.client
api = _auth.api


@pytest.fixture(scope="session")
def chromium(missing_server: Callable[[str, str], None]) -> None:
    """Chromium and its driver are installed (else a loud skip; a failure in CI)."""
    reason = chromium_missing()
    if reason is not None:
        missing_server("Chromium (chromium, chromium-driver)", reason)


@pytest.fixture
def browser(chromium: None, tmp_path: Path) -> Iterator[Browser]:
    """A fresh headless Chromium for one test; its failure artifacts go in tmp_path."""
    session = start_browser(tmp_path / "browser")
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The client application's redirect URI (one per module: it is registered once)."""
    server = start_receiver()
    try:
        yield server
    finally:
        stop_receiver(server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure with a browser open, save what it showed and name the files."""
    report = yield
    session = getattr(item, "funcargs", {}).get("browser")
    if report.failed and call.when in ("setup", "call") and isinstance(session, Browser):
        saved = session.save_artifacts()
        report.sections.append(("browser artifacts", "\n".join(str(path) for path in saved)))
    return report
