"""Secrets generated once on disk for the embedded default, and the internal API token."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

INTERNAL_TOKEN_HEADER = "X-Internal-Token"  # noqa: S105 - a header name
# Its own directory, not keys/: a deployment can share it with the gateway without
# sharing the signing key (docker-compose.yml mounts one volume there in both services).
INTERNAL_TOKEN_PATH = ("internal", "api-token")
MIN_INTERNAL_TOKEN_LENGTH = 32
# SECURITY: the gateway never routes a path under this prefix, whatever its route table.
INTERNAL_PATH_PREFIX = "/internal/"


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """Return the file's bytes, creating it once with `make()` (mode 0600) when missing.

    Several processes (gunicorn workers, both services under `make run`) may start at the
    same moment: each writes a complete file to a private temporary name and hard-links it
    to the final name, which only one can do; the others read the winner's. Readers never
    see a partly written file.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".new-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o600)  # mkstemp already uses 0600; say it explicitly
        # FileExistsError: another process won the race, and everyone uses its file.
        with contextlib.suppress(FileExistsError):
            os.link(temp_name, path)
    finally:
        os.unlink(temp_name)
    return path.read_bytes()


def internal_api_token(configured: str | None, var_dir: Path) -> str:
    """INTERNAL_API_TOKEN, or (embedded default) one generated once as `<var>/internal/api-token`.

    Both services read the same file when they share the var directory (`make run`), so
    the gateway can call the auth service's internal endpoints with no configuration.
    """
    if configured:
        return configured
    raw = read_or_create(
        var_dir.joinpath(*INTERNAL_TOKEN_PATH), lambda: secrets.token_urlsafe(32).encode()
    )
    return raw.decode().strip()


def same_token(presented: str | None, expected: str) -> bool:
    """Compare in constant time, so the answer's timing reveals nothing of the token."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
