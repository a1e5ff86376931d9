"""Password-reset request time for known vs unknown emails, as a ratio (issue #9).

An attacker who can time `POST /api/v1/auth/password-reset` must not learn whether an
account exists. This script starts the real auth service under gunicorn (its own config,
one worker, the mail sender running in it as in production) on PostgreSQL (when one
answers at $BENCH_POSTGRES_URL, a throwaway database) and on SQLite, sends the same number
of requests for a registered email and for unknown ones in a shuffled order, over
127.0.0.1 only, and prints both medians and their ratio (target: within 10 %).

    .venv/bin/python bench/password_reset_timing.py [--requests 300]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import sqlalchemy

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
KNOWN = "known@example.com"
PASSWORD = "benchmark password"  # noqa: S105 - a throwaway account's
TARGET = 0.10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """A throwaway PostgreSQL database, or None when no server answers."""
    admin = sqlalchemy.create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 2}
    )
    name = f"bench_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError:
        admin.dispose()
        yield None
        return
    try:
        yield str(sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(database=name))
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def auth_service(database_url: str, workdir: Path) -> Iterator[str]:
    """The auth service under deploy/gunicorn_auth.conf.py with one worker; its base URL."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "REDIS_"))},
        "DATABASE_URL": database_url,
        "AUTHGATE_VAR_DIR": str(workdir),
        "AUTH_PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "BCRYPT_ROUNDS": "4",
        "LOG_FORMAT": "json",
    }
    subprocess.run(
        [sys.executable, "-m", "auth_service.cli", "migrate"],
        env=env,
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    log = workdir / "gunicorn.log"
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    conf = str(REPO / "deploy" / "gunicorn_auth.conf.py")
    with log.open("wb") as output:
        server = subprocess.Popen(
            [gunicorn, "-c", conf], env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, log)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base}/readyz", timeout=1).ok:
                return
        time.sleep(0.2)
    server.kill()
    print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    raise SystemExit("the auth service did not start")


def time_resets(base: str, count: int) -> tuple[list[float], list[float]]:
    """Seconds per request for the known email and for unknown ones, in a shuffled order."""
    kinds = ["known"] * count + ["unknown"] * count
    random.shuffle(kinds)
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    with requests.Session() as session:
        session.trust_env = False  # no proxies for 127.0.0.1
        registered = session.post(
            f"{base}/api/v1/auth/register", json={"email": KNOWN, "password": PASSWORD}, timeout=10
        )
        assert registered.status_code == 201, registered.text
        for n, kind in enumerate(["known", "unknown"] * 20 + kinds):
            email = KNOWN if kind == "known" else f"nobody{n}@example.com"
            started = time.perf_counter()
            answer = session.post(
                f"{base}/api/v1/auth/password-reset", json={"email": email}, timeout=10
            )
            elapsed = time.perf_counter() - started
            assert answer.status_code == 202, answer.text
            if n >= 40:  # the first 40 warm the worker up
                timings[kind].append(elapsed)
    return timings["known"], timings["unknown"]


def measure(label: str, database_url: str, count: int) -> float:
    with (
        tempfile.TemporaryDirectory(prefix="bench-reset-") as tmp,
        auth_service(database_url, Path(tmp)) as base,
    ):
        known, unknown = time_resets(base, count)
    known_ms, unknown_ms = statistics.median(known) * 1e3, statistics.median(unknown) * 1e3
    ratio = known_ms / unknown_ms
    verdict = "ok" if abs(ratio - 1) <= TARGET else "OUTSIDE TARGET"
    print(
        f"{label:<11} known {known_ms:6.2f} ms   unknown {unknown_ms:6.2f} ms   "
        f"ratio {ratio:.3f}  ({verdict}; median of {count} each)"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per kind (at most 5000)")
    args = parser.parse_args()
    count = max(10, min(args.requests, 5000))
    print(f"password reset, known / unknown email (target: ratio within 1 +- {TARGET:.2f})")
    with postgres_database() as postgres:
        if postgres is None:
            print(f"postgresql  SKIPPED: nothing answers at {POSTGRES_ADMIN_URL}")
        else:
            measure("postgresql", postgres, count)
    with tempfile.TemporaryDirectory(prefix="bench-reset-db-") as tmp:
        measure("sqlite", f"sqlite:///{Path(tmp) / 'auth.db'}", count)


if __name__ == "__main__":
    main()
