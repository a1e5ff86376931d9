"""Fixtures shared by every test: real servers when they run, loud skips when they do not.

With CI=true a missing PostgreSQL or Redis is a failure, never a skip.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import sqlalchemy

# The hooks that let tests/test_problem_types_observed.py judge a whole run.
from problem_observer import (  # noqa: F401
    pytest_collection_modifyitems,
    pytest_deselected,
    pytest_runtest_logreport,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_missing_servers: set[str] = set()


def server_missing(name: str, reason: str) -> None:
    """Skip (or fail, in CI) a test that needs a server that does not answer."""
    _missing_servers.add(name)
    message = f"{name} is not reachable ({reason}); start it to run this test"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def missing_server() -> Callable[[str, str], None]:
    """server_missing, for test modules: `from conftest import` is ambiguous in subpackages."""
    return server_missing


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly, at the very end, which servers were missing and what was skipped."""
    if _missing_servers:
        terminalreporter.section("SKIPPED: servers not running", sep="!", red=True, bold=True)
        for name in sorted(_missing_servers):
            terminalreporter.write_line(
                f"{name} was not reachable: every test that needs it was SKIPPED. "
                "See README 'Running the tests'.",
                red=True,
            )


def port_open(url: str) -> bool:
    """Whether something listens at the URL's host and port."""
    parts = urlsplit(url.replace("+psycopg2", ""))
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a running PostgreSQL."""
    if not port_open(POSTGRES_ADMIN_URL):
        server_missing("PostgreSQL", POSTGRES_ADMIN_URL)
    return POSTGRES_ADMIN_URL


def create_postgres_database(admin_url: str) -> str:
    """Create a throwaway database and return its URL."""
    name = f"test_{secrets.token_hex(6)}"
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return str(sqlalchemy.engine.make_url(admin_url).set(database=name))


def drop_postgres_database(admin_url: str, url: str) -> None:
    """Drop a throwaway database, ending any connection still open to it."""
    name = sqlalchemy.engine.make_url(url).database
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh database on the real PostgreSQL for this test session, dropped afterwards."""
    url = create_postgres_database(postgres_server)
    yield url
    drop_postgres_database(postgres_server, url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a running Redis."""
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as ex:
        server_missing("Redis", f"{REDIS_TEST_URL}: {type(ex).__name__}")
    return REDIS_TEST_URL


@pytest.fixture(scope="session")
def postgres_binaries() -> Path:
    """The directory of initdb and pg_ctl, for tests that run a PostgreSQL of their own."""
    # NOTE: Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/N/bin.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("initdb")
    for directory in [*candidates, *([str(Path(found).parent)] if found else [])]:
        if Path(directory, "initdb").exists() and Path(directory, "pg_ctl").exists():
            return Path(directory)
    server_missing("PostgreSQL server binaries (initdb, pg_ctl)", "not installed")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    """The redis-server program, for tests that run a Redis of their own."""
    found = shutil.which("redis-server")
    if found is None:
        server_missing("redis-server", "not installed")
        raise AssertionError("unreachable")
    return found
