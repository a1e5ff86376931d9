"""Server processes for tests/ and contract_tests/: free ports, gunicorn, the auth service.

tests/ is on sys.path when pytest collects it (tests/conftest.py has no package around it);
contract_tests/contract_support.py puts it there for runs of contract_tests/ alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import requests

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
# One shared secret for every auth service and gateway the tests start, so any gateway
# can read any auth service's revocation feed (each would otherwise generate its own in
# its own var directory). Pass INTERNAL_API_TOKEN="" to test the generated default.
TEST_INTERNAL_API_TOKEN = "test-internal-api-token-" + "0" * 16


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(conf: str, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """gunicorn with one of deploy/'s configs, its output (stdout and stderr) to `log`.

    NOTE: a file, not a pipe: nobody drains a pipe during a run, and a full one would
    block the server mid-test.
    """
    return subprocess.Popen(
        [GUNICORN, "-c", str(REPO / "deploy" / conf)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_http(
    url: str,
    timeout: float = 15.0,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    status: int | None = None,
    log: Path | None = None,
) -> None:
    """Poll until url answers (with `status`, when given), or raise with the server's output.

    The output is the process's stdout pipe, if it has one, else the `log` file.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"server exited early ({proc.returncode}):\n{_output(proc, log)[-3000:]}"
            )
        try:
            answer = requests.get(url, timeout=1)
            if status is None or answer.status_code == status:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout}s:\n{_output(proc, log)[-3000:]}")


def listeners(port: int) -> int:
    """How many sockets listen on this TCP port (each gunicorn worker has its own)."""
    hex_port = f":{port:04X} "
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as rows:
            # Columns: sl, local_address (ip:PORT), rem_address, st (0A = LISTEN), ...
            count += sum(
                1 for row in rows if hex_port in row.split()[1] + " " and row.split()[3] == "0A"
            )
    return count


def wait_listeners(port: int, count: int, timeout: float = 60.0) -> None:
    """Wait until `count` workers listen on `port` (each binds once its app is loaded)."""
    deadline = time.monotonic() + timeout
    while listeners(port) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{listeners(port)} of {count} workers listen on {port}")
        time.sleep(0.05)


def _output(proc: subprocess.Popen[bytes] | None, log: Path | None) -> str:
    if proc is not None and proc.stdout is not None:
        if proc.poll() is None:
            return ""  # reading a live process's pipe would block until it exits
        return proc.stdout.read().decode(errors="replace")
    if log is not None and log.exists():
        return log.read_text(errors="replace")
    return ""


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminate a process we started, kill it after `grace` seconds, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def running_auth_service(
    root: Path,
    *,
    var_dir: Path | None = None,
    workers: int = 1,
    ready_path: str = "/healthz",
    ready_status: int | None = None,
    foreign_settings: tuple[str, ...] = ("OTEL_", "PROMETHEUS_"),
    grace: float = 10.0,
    **env: str,
) -> Iterator[str]:
    """The real auth service under deploy/gunicorn_auth.conf.py on migrated SQLite; its URL.

    Its database (auth.db) and gunicorn's log (gunicorn.log) go in `root`, its
    AUTHGATE_VAR_DIR (signing keys) is `var_dir` (default: `root`). Environment variables
    starting with one of `foreign_settings` are not passed on (a developer's shell may
    carry them); `env` is added last. Ready once `ready_path` answers (with
    `ready_status`, when given); stopped however the caller ends.
    """
    port = free_port()
    server_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(foreign_settings)},
        "DATABASE_URL": f"sqlite:///{root / 'auth.db'}",
        "AUTHGATE_VAR_DIR": str(var_dir or root),
        "BCRYPT_ROUNDS": "4",
        "REDIS_URL": "",  # none unless the caller gives one
        "INTERNAL_API_TOKEN": TEST_INTERNAL_API_TOKEN,
        "AUTH_PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "PYTHONPATH": str(REPO),
        **env,
    }
    migrate = subprocess.run(
        [PYTHON, "-m", "auth_service.cli", "migrate"],
        cwd=REPO,
        env=server_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    log_path = root / "gunicorn.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = start_gunicorn("gunicorn_auth.conf.py", server_env, log)
        try:
            wait_http(f"{base}{ready_path}", 30, proc, status=ready_status, log=log_path)
            wait_listeners(port, workers)
            yield base
        finally:
            stop(proc, grace)
