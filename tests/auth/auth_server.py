"""The auth service as a real gunicorn process, for tests that need real workers."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

import process_support
import requests

# Settings a developer's shell may carry that must not leak into a test server.
_FOREIGN_SETTINGS = ("DATABASE_", "REDIS_", "JWT_", "SMTP_", "AUTHGATE_", "OTEL_", "PROMETHEUS_")


def running_auth_service(root: Path, **extra_env: str) -> contextlib.AbstractContextManager[str]:
    """The auth service under deploy/gunicorn_auth.conf.py with 2 workers; its base URL.

    process_support.running_auth_service as the auth tests need it: a migrated SQLite
    file under `root`, an empty key directory (root/var) for the workers to race over,
    ready once /readyz says 200, nothing from the developer's shell's own settings.
    """
    return process_support.running_auth_service(
        root,
        var_dir=root / "var",
        workers=2,
        ready_path="/readyz",
        ready_status=200,
        foreign_settings=_FOREIGN_SETTINGS,
        grace=15,
        **{"AUTH_THREADS": "4", "LOG_FORMAT": "json", **extra_env},
    )


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


CLI = [process_support.PYTHON, "-m", "auth_service.cli"]


def cli_env(**env: str) -> dict[str, str]:
    """The environment for the CLI: `env`, and none of the shell's own settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_SETTINGS)}
    return {**clean, "BCRYPT_ROUNDS": "4", **env}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m auth_service.cli ARGS` run to its end, with `cli_env(**env)`."""
    return subprocess.run(
        [*CLI, *args],
        cwd=process_support.REPO,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
