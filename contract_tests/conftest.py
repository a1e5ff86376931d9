"""Live services for the contract suite: auth and gateway under gunicorn, fresh database.

The server fixtures of tests/conftest.py (PostgreSQL, Redis, loud skips, CI failures) are
reused, not copied: that file is loaded under its own module name because a conftest in
a sibling directory is not visible here.
"""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis
import requests
import schemathesis
from contract_support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    REPO,
    SESSIONS_EMAIL,
    SESSIONS_PASSWORD,
    USER_EMAIL,
    USER_PASSWORD,
    Server,
    base_env,
    gunicorn,
    load_schema,
    run_cli,
)
from process_support import free_port


def _load_shared_fixtures() -> ModuleType:
    path = REPO / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location("authgate_shared_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_shared = _load_shared_fixtures()
postgres_server = _shared.postgres_server
postgres_database = _shared.postgres_database
redis_url = _shared.redis_url
# The shared "which servers were missing" summary, for runs of contract_tests/ alone.
pytest_terminal_summary = _shared.pytest_terminal_summary

# Limits raised so that throttling never hides a finding (a 429 is a documented answer).
HIGH_RATE = "1000000/minute"


@pytest.fixture(scope="session")
def contract_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the servers' logs go (shown when a server fails to start)."""
    return tmp_path_factory.mktemp("contract-logs")


@pytest.fixture(scope="session")
def auth_service(
    postgres_database: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    contract_logs: Path,
) -> Iterator[Server]:
    """The auth service under gunicorn on a migrated, fresh database, with an admin and a user."""
    port = free_port()
    env = base_env(
        DATABASE_URL=postgres_database,
        REDIS_URL=redis_url,
        AUTHGATE_VAR_DIR=str(tmp_path_factory.mktemp("contract-var")),
        AUTH_PORT=str(port),
        WEB_CONCURRENCY="2",
        AUTH_THREADS="4",
        BCRYPT_ROUNDS="4",
        RESPONSE_VALIDATION="strict",
        LOGIN_MAX_FAILURES="1000",
        LOGIN_MAX_FAILURES_PER_ACCOUNT="100000",
        LOG_FORMAT="json",
        FIRST_SUPERUSER_EMAIL=ADMIN_EMAIL,
        FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
    )
    run_cli(env, "migrate")
    assert "Created superuser" in run_cli(env, "create-admin")
    url = f"http://127.0.0.1:{port}"
    with gunicorn("auth", "gunicorn_auth.conf.py", env, url, contract_logs) as server:
        for email, password in ((USER_EMAIL, USER_PASSWORD), (SESSIONS_EMAIL, SESSIONS_PASSWORD)):
            registered = requests.post(
                f"{url}/api/v1/auth/register",
                json={"email": email, "password": password, "full_name": "Contract User"},
                timeout=30,
            )
            assert registered.status_code == 201, registered.text
        yield server


@pytest.fixture(scope="session")
def gateway_service(auth_service: Server, redis_url: str, contract_logs: Path) -> Iterator[Server]:
    """The gateway under gunicorn in front of the auth service, limits raised."""
    port = free_port()
    prefix = f"contract-{secrets.token_hex(6)}:rl:"
    env = base_env(
        GATEWAY_PORT=str(port),
        AUTH_SERVICE_URL=auth_service.url,
        REDIS_URL=redis_url,
        GATEWAY_RATE_LIMIT_KEY_PREFIX=prefix,
        RATE_LIMIT_DEFAULT=HIGH_RATE,
        RATE_LIMIT_AUTH=HIGH_RATE,
        # A breaker opened by one 5xx burst would turn later findings into 503s.
        GATEWAY_BREAKER_FAILURES="10000",
        GATEWAY_JWKS_MIN_REFRESH_SECONDS="0",
        WEB_CONCURRENCY="2",
        GATEWAY_THREADS="8",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with gunicorn("gateway", "gunicorn_gateway.conf.py", env, url, contract_logs) as server:
            yield server
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


@pytest.fixture(scope="session")
def auth_api_schema(auth_service: Server) -> schemathesis.BaseSchema:
    """The spec aimed at the auth service, with live tokens."""
    return load_schema(auth_service.url)


@pytest.fixture(scope="session")
def gateway_api_schema(gateway_service: Server) -> schemathesis.BaseSchema:
    """The spec aimed at the gateway, with live tokens, minus the internal operations,
    which the gateway never routes (test_route_coverage checks the 404)."""
    return load_schema(gateway_service.url).exclude(tag="internal")
