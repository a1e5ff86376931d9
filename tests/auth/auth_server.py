"""The auth service as a real gunicorn process, for tests that need real workers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from auth_service.db.migrations import upgrade

ROOT = Path(__file__).resolve().parents[2]
# Settings a developer's shell may carry that must not leak into a test server.
_FOREIGN_SETTINGS = ("DATABASE_", "REDIS_", "JWT_", "SMTP_", "AUTHGATE_", "OTEL_", "PROMETHEUS_")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_auth_service(root: Path, **extra_env: str) -> Iterator[str]:
    """The auth service under deploy/gunicorn_auth.conf.py with 2 workers; its base URL.

    It runs on a migrated SQLite file and an empty key directory (root/var) under `root`,
    and is stopped however the test ends.
    """
    database_url = f"sqlite:///{root / 'auth.db'}"
    upgrade(database_url)
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_SETTINGS)},
        "AUTH_PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "AUTH_THREADS": "4",
        "DATABASE_URL": database_url,
        "AUTHGATE_VAR_DIR": str(root / "var"),
        "BCRYPT_ROUNDS": "4",
        "LOG_FORMAT": "json",
        **extra_env,
    }
    log_path = root / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(ROOT / "deploy" / "gunicorn_auth.conf.py"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_ready(process, base, log_path)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"gunicorn did not start: {log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)


def fresh_connection(
    method: str, url: str, token: str | None = None, **kwargs: Any
) -> requests.Response:
    """One request on its own TCP connection, so the kernel may hand it to either worker."""
    headers = {"Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with requests.Session() as session:
        session.trust_env = False  # no proxies from the environment for 127.0.0.1
        return session.request(method, url, headers=headers, timeout=10, **kwargs)
