"""Fixtures for the OAuth tests: a headless Chromium per test, the client's redirect URI.

Without chromium and chromium-driver the browser tests are skipped loudly through the
missing-server mechanism of tests/conftest.py (and fail with CI=true).
"""

from __future__ import annotations

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
