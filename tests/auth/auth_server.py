"""The auth service as a real gunicorn process, for tests that need real workers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from process_support import free_port, start_gunicorn, stop, wait_http

from auth_service.db.migrations import upgrade

# Settings a developer's shell may carry that must not leak into a test server.
_FOREIGN_SETTINGS = ("DATABASE_", "REDIS_", "JWT_", "SMTP_", "AUTHGATE_", "OTEL_", "PROMETHEUS_")


@contextlib.contextmanager
def running_auth_service(root: Path, **extra_env: str) -> Iterator[str]:
    """The auth service under deploy/gunicorn_auth.conf.py with 2 workers; its base URL.

    It runs on a migrated SQLite file and an empty key directory (root/var) under `root`,
    and is stopped however the test ends.
    """
    database_url = f"sqlite:///{root / 'auth.db'}"
    upgrade(database_url)
    port = free_port()
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
        process = start_gunicorn("gunicorn_auth.conf.py", env, log)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/readyz", 30, process, status=200, log=log_path)
            yield base
        finally:
            stop(process, grace=15)


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
