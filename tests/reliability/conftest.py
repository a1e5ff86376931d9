"""Fixtures of the reliability drills: private PostgreSQL and Redis, and the result table.

Every drill records (drill, injected, observed, lost) and the table is printed at the
end of the run; README's "Reliability drills" section keeps a copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import RESULTS, PrivatePostgres, PrivateRedis


@pytest.fixture
def private_postgres(postgres_binaries: Path) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this drill's own (initdb), removed afterwards."""
    server = PrivatePostgres(postgres_binaries)
    yield server
    server.destroy()


@pytest.fixture
def private_redis(tmp_path: Path, redis_server_binary: str) -> Iterator[PrivateRedis]:
    """A redis-server of this drill's own."""
    server = PrivateRedis(tmp_path, redis_server_binary)
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The drills' result table: what was injected, what clients saw, what was lost."""
    if not RESULTS:
        return
    terminalreporter.section("reliability drills", sep="=", bold=True)
    rows = [("drill", "injected", "observed", "lost")]
    rows += [(r.drill, r.injected, r.observed, str(r.lost)) for r in RESULTS]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        terminalreporter.write_line(
            "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
