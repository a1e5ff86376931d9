"""Private servers and bounded load for the reliability drills.

Every drill starts its own PostgreSQL cluster (initdb/pg_ctl), its own redis-server and
its own gunicorn processes on free loopback ports, so it can stop, kill and restart them
without touching the machine's shared servers. Load loops are bounded in time and count.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
from process_support import (
    PYTHON,
    REPO,
    free_port,
    start_gunicorn,
    stop,
    wait_http,
    wait_listeners,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery"


def _as_postgres_user() -> list[str]:
    # NOTE: initdb and postgres refuse to run as root; CI runs as root.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, which a drill may stop and start."""

    def __init__(self, bindir: Path) -> None:
        self._bin = bindir
        # NOTE: under /tmp itself, not pytest's tmp_path: run as root, pytest's directory
        # is private to root, and the server runs as the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="authgate-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        (self.data / "postgresql.conf").open("a").write(
            f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.root}'\nfsync = off\nmax_connections = 60\n"
        )
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "authgate")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/authgate"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*_as_postgres_user(), str(self._bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Stop at once (fast mode: open connections are cut, as in a crash or failover)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def ready(self) -> bool:
        return (
            subprocess.run(
                [str(self._bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            ).returncode
            == 0
        )

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server on a free port that keeps nothing on disk; stop and start at will."""

    def __init__(self, root: Path, program: str) -> None:
        self.port = free_port()
        self._root = root
        self._program = program
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                *(self._program, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self._root)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc)
            self._proc = None


@dataclass
class Service:
    """One gunicorn-served service; `restart` and `kill` act on the real processes."""

    conf: str
    env: dict[str, str]
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = start_gunicorn(self.conf, self.env, log)
        wait_http(f"{self.url}/healthz", 30, self.proc, log=self.log)
        wait_listeners(int(self.url.rsplit(":", 1)[1]), int(self.env["WEB_CONCURRENCY"]))

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is not None:
            stop(self.proc, grace)
            self.proc = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def worker_pids(self) -> list[int]:
        """The gunicorn workers of this master (children in /proc)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()]


def _base_env() -> dict[str, str]:
    foreign = ("DATABASE_", "REDIS_", "JWT_", "SMTP_", "AUTHGATE_", "OTEL_", "PROMETHEUS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(foreign)}


@dataclass
class Stack:
    """The auth service and the gateway in front of it, on private PostgreSQL and Redis."""

    root: Path
    auth: Service
    gateway: Service

    @property
    def api(self) -> str:
        return f"{self.gateway.url}/api/v1"

    def stop(self) -> None:
        self.gateway.stop()
        self.auth.stop()


def start_stack(
    root: Path,
    database_url: str,
    redis_url: str | None,
    *,
    auth_env: dict[str, str] | None = None,
    gateway_env: dict[str, str] | None = None,
) -> Stack:
    """Migrate the database, then start the auth service and the gateway under gunicorn."""
    auth_port, gateway_port = free_port(), free_port()
    common = {
        **_base_env(),
        "PYTHONPATH": str(REPO),
        "REDIS_URL": redis_url or "",
        "LOG_FORMAT": "json",
        "WEB_CONCURRENCY": "2",
    }
    env = {
        **common,
        "DATABASE_URL": database_url,
        "AUTHGATE_VAR_DIR": str(root / "var"),
        "AUTH_PORT": str(auth_port),
        "AUTH_THREADS": "4",
        "BCRYPT_ROUNDS": "4",
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "LOGIN_MAX_FAILURES": "1000",
        **(auth_env or {}),
    }
    migrate = subprocess.run(
        [PYTHON, "-m", "auth_service.cli", "migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    auth = Service("gunicorn_auth.conf.py", env, f"http://127.0.0.1:{auth_port}", root / "auth.log")
    gw_env = {
        **common,
        "GATEWAY_PORT": str(gateway_port),
        "AUTH_SERVICE_URL": auth.url,
        "GATEWAY_THREADS": "8",
        "GATEWAY_CONNECT_TIMEOUT": "1",
        "GATEWAY_READ_TIMEOUT": "5",
        "GATEWAY_BREAKER_FAILURES": "5",
        "GATEWAY_BREAKER_RESET_SECONDS": "1",
        "RATE_LIMIT_DEFAULT": "1000000/minute",
        "RATE_LIMIT_AUTH": "1000000/minute",
        **(gateway_env or {}),
    }
    gateway = Service(
        "gunicorn_gateway.conf.py", gw_env, f"http://127.0.0.1:{gateway_port}", root / "gw.log"
    )
    auth.start()
    try:
        gateway.start()
    except Exception:
        auth.stop()
        raise
    return Stack(root, auth, gateway)


def session() -> requests.Session:
    client = requests.Session()
    client.trust_env = False  # no proxies from the environment for 127.0.0.1
    return client


def register_and_login(api: str, email: str, *, admin: bool = False) -> dict[str, str]:
    """A fresh user's TokenPair, through the gateway."""
    with session() as client:
        made = client.post(
            f"{api}/auth/register", json={"email": email, "password": PASSWORD}, timeout=10
        )
        assert made.status_code == 201, made.text
        login = client.post(
            f"{api}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10
        )
        assert login.status_code == 200, login.text
        return dict(login.json())


@dataclass
class Outcome:
    """One request of a load loop."""

    started: float
    seconds: float
    status: int | None  # None: no answer (connection error or client timeout)
    problem_type: str | None = None
    error: str | None = None


@dataclass
class Load:
    """Runs `request` in `threads` loops until stopped, bounded by `max_requests` in all."""

    request: Callable[[requests.Session], requests.Response]
    threads: int = 4
    max_requests: int = 5000
    client_timeout: float = 15.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self) -> None:
        with session() as client:
            while not self._stop.is_set():
                with self._lock:
                    if len(self.outcomes) >= self.max_requests:
                        return
                started = time.monotonic()
                outcome = Outcome(started, 0.0, None)
                try:
                    answer = self.request(client)
                    outcome.status = answer.status_code
                    if answer.headers.get("content-type", "").startswith(
                        "application/problem+json"
                    ):
                        outcome.problem_type = json.loads(answer.content).get("type")
                except requests.RequestException as ex:
                    outcome.error = type(ex).__name__
                outcome.seconds = time.monotonic() - started
                with self._lock:
                    self.outcomes.append(outcome)

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        workers = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(self.client_timeout + 5)

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.started < end]

    def statuses(self, outcomes: list[Outcome] | None = None) -> Counter[int | None]:
        return Counter(o.status for o in (self.outcomes if outcomes is None else outcomes))


@dataclass
class DrillResult:
    """One row of the table printed at the end of the run (and kept in the README)."""

    drill: str
    injected: str
    observed: str
    lost: int


RESULTS: list[DrillResult] = []


def record(drill: str, injected: str, observed: str, lost: int = 0) -> None:
    RESULTS.append(DrillResult(drill, injected, observed, lost))
