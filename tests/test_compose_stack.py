"""The compose stack for real: `make up`, `make migrate`, `make create-admin` as the README says.

Builds the image, runs docker-compose.yml on a Docker engine with a project name and a
published port of its own (127.0.0.1 only), and drives the API through the gateway. The
images come from PYTHON_IMAGE / POSTGRES_IMAGE / REDIS_IMAGE (the official ones by
default; .ci/run builds deploy/offline/'s). Without an engine the test skips loudly; with
CI=true it fails. Everything the project created is removed afterwards, even on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from process_support import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "stack-admin@example.com"
ADMIN_PASSWORD = "Stack-Admin-Pass-7"
# PERF: a first build (no layer cache) downloads and compiles the dependencies.
UP_TIMEOUT_SECONDS = 900
HEALTH_TIMEOUT_SECONDS = 180
# Requests sent while one of three auth replicas stops (about 40 s at 5 per second).
LOAD_REQUESTS = 200

pytestmark = [
    pytest.mark.slow,
    pytest.mark.compose,
    # The first test also pays for `make up` (the module's fixture).
    pytest.mark.timeout(UP_TIMEOUT_SECONDS + HEALTH_TIMEOUT_SECONDS + 120),
]


@dataclass(frozen=True)
class Stack:
    project: str
    url: str
    make_vars: list[str]

    def make(self, target: str, *make_vars: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`make <target>` on this stack, output captured; the caller asserts the status.

        NOTE: the Makefile includes .env, whose values win over the environment's; a
        NAME=value argument to make wins over both.
        """
        return subprocess.run(
            ["make", "--no-print-directory", target, *self.make_vars, *make_vars],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT_SECONDS,
            check=False,
        )

    def containers(self, service: str | None = None, *, all_states: bool = False) -> list[str]:
        flags = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            flags += ["--filter", f"label=com.docker.compose.service={service}"]
        return _docker("ps", "-q", *(["-a"] if all_states else []), *flags).split()

    def logs(self, service: str) -> str:
        (container,) = self.containers(service)
        done = subprocess.run(
            ["docker", "logs", container], capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout + done.stderr


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, check=True
    ).stdout


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


def _project_leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    return {
        "containers": _docker("ps", "-aq", "--filter", label).split(),
        "networks": _docker("network", "ls", "-q", "--filter", label).split(),
        "volumes": _docker("volume", "ls", "-q", "--filter", label).split(),
    }


def _remove_project(project: str) -> None:
    """Remove what compose made for the project, whether or not compose itself still works."""
    leftovers = _project_leftovers(project)
    if leftovers["containers"]:
        _docker("rm", "-f", "-v", *leftovers["containers"])
    if leftovers["networks"]:
        _docker("network", "rm", *leftovers["networks"])
    if leftovers["volumes"]:
        _docker("volume", "rm", "-f", *leftovers["volumes"])


def _wait_healthy(stack: Stack, service: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    status = ""
    while time.monotonic() < deadline:
        containers = stack.containers(service)
        if containers:
            status = _docker("inspect", "-f", "{{.State.Health.Status}}", *containers)
            if set(status.split()) == {"healthy"}:
                return
        time.sleep(1)
    pytest.fail(f"{service} not healthy after {HEALTH_TIMEOUT_SECONDS}s (health: {status!r})")


@pytest.fixture(scope="module")
def stack(missing_server: Callable[[str, str], None]) -> Iterator[Stack]:
    if not _engine_answers():
        missing_server("Docker engine", "`docker info` failed; see README 'Docker Compose'")
    project = f"authgate-test-{secrets.token_hex(4)}"
    port = free_port()
    env_file = ROOT / ".env"
    created_env = not env_file.exists()
    # Command-line variables win over .env, which the Makefile includes.
    make_vars = [
        f"COMPOSE_PROJECT_NAME={project}",
        f"GATEWAY_PORT={port}",
        "GATEWAY_PUBLISH_ADDRESS=127.0.0.1",
        f"AUTHGATE_SUBNET=172.29.{secrets.randbelow(250) + 1}.0/24",
        "AUTHGATE_IMAGE_TAG=stack-test",
    ]
    stack = Stack(project=project, url=f"http://127.0.0.1:{port}", make_vars=make_vars)
    try:
        up = stack.make("up")
        assert up.returncode == 0, f"make up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        _wait_healthy(stack, "gateway")
        yield stack
    finally:
        down = stack.make("down")
        _remove_project(project)
        if created_env:
            env_file.unlink(missing_ok=True)
    assert down.returncode == 0, f"make down failed: {down.stderr[-2000:]}"
    left = _project_leftovers(project)
    assert left == {"containers": [], "networks": [], "volumes": []}, f"left behind: {left}"


def test_operator_commands_act_on_the_running_stack(stack: Stack) -> None:
    migrate = stack.make("migrate")
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    assert f"compose stack '{stack.project}'" in migrate.stdout
    assert "@postgres:5432/" in migrate.stdout, migrate.stdout[-2000:]
    assert "schema is up to date" in migrate.stdout

    email = f"FIRST_SUPERUSER_EMAIL={ADMIN_EMAIL}"
    created = stack.make("create-admin", email, FIRST_SUPERUSER_PASSWORD=ADMIN_PASSWORD)
    assert created.returncode == 0, created.stderr[-3000:]
    assert f"compose stack '{stack.project}'" in created.stdout
    assert "Database: postgresql+psycopg2://" in created.stdout
    assert "@postgres:5432/" in created.stdout
    assert f"Created superuser {ADMIN_EMAIL}" in created.stdout
    assert ADMIN_PASSWORD not in created.stdout + created.stderr

    # Again, without a password and without a terminal: no prompt, a clear answer.
    again = stack.make("create-admin", email)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already exists" in again.stdout

    # The admin is in the stack's database: it logs in through the gateway.
    login = requests.post(
        f"{stack.url}/api/v1/auth/login",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    users = requests.get(
        f"{stack.url}/api/v1/users",
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        timeout=30,
    )
    assert users.status_code == 200, users.text


def test_register_login_me_refresh_logout_through_the_gateway(stack: Stack) -> None:
    base = f"{stack.url}/api/v1"
    email = f"user-{secrets.token_hex(4)}@example.com"
    password = "Stack-User-Pass-9"
    registered = requests.post(
        f"{base}/auth/register", json={"email": email, "password": password}, timeout=30
    )
    assert registered.status_code == 201, registered.text
    login = requests.post(
        f"{base}/auth/login", json={"email": email, "password": password}, timeout=30
    )
    assert login.status_code == 200, login.text
    pair = login.json()
    me = requests.get(f"{base}/auth/me", headers=_bearer(pair["access_token"]), timeout=30)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email
    refreshed = requests.post(
        f"{base}/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=30
    )
    assert refreshed.status_code == 200, refreshed.text
    new_pair = refreshed.json()
    logout = requests.post(
        f"{base}/auth/logout", json={"refresh_token": new_pair["refresh_token"]}, timeout=30
    )
    assert logout.status_code == 204, logout.text
    # Revocation travels auth -> Redis -> gateway: the logged-out tokens are dead at once.
    revoked = requests.get(f"{base}/auth/me", headers=_bearer(new_pair["access_token"]), timeout=30)
    assert revoked.status_code == 401, revoked.text
    reused = requests.post(
        f"{base}/auth/refresh", json={"refresh_token": new_pair["refresh_token"]}, timeout=30
    )
    assert reused.status_code == 401, reused.text

    ready = requests.get(f"{stack.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"upstream:/api/v1/auth": "ok", "redis": "ok"}


def test_metrics_and_json_logs(stack: Stack) -> None:
    login = requests.post(
        f"{stack.url}/api/v1/auth/login",
        json={"email": "nobody@example.com", "password": "not the password"},
        timeout=30,
    )
    assert login.status_code == 401, login.text
    request_id = login.headers["X-Request-ID"]

    metrics = requests.get(f"{stack.url}/metrics", timeout=30)
    assert metrics.status_code == 200, metrics.text
    # Labelled by route prefix (bounded cardinality), not by the full path.
    counted = [
        line
        for line in metrics.text.splitlines()
        if line.startswith("gateway_requests_total{")
        and 'route="/api/v1/auth"' in line
        and 'status="401"' in line
        and float(line.rsplit(" ", 1)[1]) >= 1
    ]
    assert counted, f"no 401 on /api/v1/auth counted: {metrics.text[:3000]}"

    for service in ("gateway", "auth"):
        deadline = time.monotonic() + 30
        found: list[dict[str, object]] = []
        while not found and time.monotonic() < deadline:
            found = [
                record
                for record in _json_lines(stack.logs(service))
                if record.get("request_id") == request_id
            ]
            time.sleep(0.5)
        assert found, f"no JSON log record of {service} carries request_id {request_id}"
        assert all({"time", "level", "logger", "message"} <= set(r) for r in found), found


def _json_lines(text: str) -> list[dict[str, object]]:
    """The JSON records among a container's log lines (gunicorn's own start-up lines too)."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _compose(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The compose command the Makefile would pick, on this stack's project and settings."""
    if subprocess.run(
        ["docker", "compose", "version"], capture_output=True, check=False
    ).returncode:
        command = ["docker-compose"]
    else:
        command = ["docker", "compose"]
    env = {**os.environ, **dict(var.split("=", 1) for var in stack.make_vars)}
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_SECONDS,
        check=False,
    )


def _me_records(stack: Stack, container: str) -> int:
    done = subprocess.run(
        ["docker", "logs", container], capture_output=True, text=True, timeout=60, check=True
    )
    return sum(
        1
        for record in _json_lines(done.stdout + done.stderr)
        if record.get("route") == "/api/v1/auth/me" and record.get("logger") != "gunicorn"
    )


def test_scaled_auth_gets_all_traffic_spread_and_survives_a_replica_stopping(
    stack: Stack,
) -> None:
    scaled = _compose(stack, "up", "-d", "--no-build", "--no-recreate", "--scale", "auth=3")
    assert scaled.returncode == 0, scaled.stderr[-3000:]
    _wait_healthy(stack, "auth")
    replicas = stack.containers("auth")
    assert len(replicas) == 3, replicas

    email = f"scale-{secrets.token_hex(4)}@example.com"
    password = "Scale-User-Pass-5"
    base = f"{stack.url}/api/v1"
    assert (
        requests.post(
            f"{base}/auth/register", json={"email": email, "password": password}, timeout=30
        ).status_code
        == 201
    )
    login = requests.post(
        f"{base}/auth/login", json={"email": email, "password": password}, timeout=30
    )
    assert login.status_code == 200, login.text
    session = requests.Session()
    session.headers.update(_bearer(login.json()["access_token"]))

    # Traffic on all three (the gateway re-resolves `auth` within GATEWAY_DNS_REFRESH_SECONDS).
    before = {c: _me_records(stack, c) for c in replicas}
    deadline = time.monotonic() + 60
    served: dict[str, int] = {}
    while time.monotonic() < deadline:
        for _ in range(15):
            assert session.get(f"{base}/auth/me", timeout=30).status_code == 200
        served = {c: _me_records(stack, c) - before[c] for c in replicas}
        if all(served.values()):
            break
    assert all(served.values()), f"/me requests per auth replica: {served}"

    # Stop one replica under a bounded load of idempotent requests: none may fail. Paced
    # at about 5/s, under .env.example's RATE_LIMIT_DEFAULT (600/minute per client).
    statuses: list[int] = []
    stopper = subprocess.Popen(["docker", "stop", replicas[0]], stdout=subprocess.DEVNULL)
    try:
        for _ in range(LOAD_REQUESTS):
            statuses.append(session.get(f"{base}/auth/me", timeout=30).status_code)
            time.sleep(0.2)
    finally:
        stopper.wait(timeout=60)
    failed = Counter(s for s in statuses if s != 200)
    assert not failed, f"{sum(failed.values())} of {len(statuses)} GETs failed: {failed}"
