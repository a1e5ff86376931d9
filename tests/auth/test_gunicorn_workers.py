"""The auth service under real gunicorn with two workers sharing one dev key and one database.

Both workers start with an empty key directory and race to create the dev signing key;
a token signed by one worker must verify in the other, whichever serves the next request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from auth_service.db.migrations import upgrade

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
LOGINS = 48
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh(method: str, url: str, token: str | None = None, **kwargs: object) -> requests.Response:
    """One request over its own TCP connection (so gunicorn may hand it to either worker)."""
    headers = {"Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with requests.Session() as session:
        session.trust_env = False  # no proxies from the environment for 127.0.0.1
        return session.request(method, url, headers=headers, timeout=10, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("gunicorn")
    var_dir = root / "var"
    var_dir.mkdir()
    database_url = f"sqlite:///{root / 'auth.db'}"
    upgrade(database_url)
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "REDIS_", "JWT_", "SMTP_", "AUTHGATE_"))
    }
    env.update(
        DATABASE_URL=database_url,
        AUTHGATE_VAR_DIR=str(var_dir),
        BCRYPT_ROUNDS="4",
        LOG_FORMAT="json",
    )
    log = (root / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            str(GUNICORN),
            "-w",
            "2",
            "-k",
            "gthread",
            "--threads",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "auth_service.wsgi:app",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited: {(root / 'gunicorn.log').read_text()[-3000:]}")
            try:
                if fresh("GET", f"{base}/healthz").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("gunicorn did not answer /healthz within 30 s")
            time.sleep(0.2)
        yield base, var_dir
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_two_workers_share_one_key_and_one_database(server: tuple[str, Path]) -> None:
    base, var_dir = server
    registered = fresh(
        "POST",
        f"{base}/api/v1/auth/register",
        json={"email": "ada@example.com", "password": PASSWORD},
    )
    assert registered.status_code == 201, registered.text

    def login(_: int) -> requests.Response:
        return fresh(
            "POST",
            f"{base}/api/v1/auth/login",
            json={"email": "ada@example.com", "password": PASSWORD},
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        logins = list(pool.map(login, range(LOGINS)))
    assert [r.status_code for r in logins] == [200] * LOGINS, [r.text for r in logins if not r.ok]
    tokens = [r.json()["access_token"] for r in logins]
    assert len(set(tokens)) == LOGINS

    def me(token: str) -> requests.Response:
        return fresh("GET", f"{base}/api/v1/auth/me", token)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(me, tokens + tokens[::-1]))
    assert [r.status_code for r in answers] == [200] * (2 * LOGINS)
    assert {r.json()["email"] for r in answers} == {"ada@example.com"}

    kids = set()
    for _ in range(20):
        jwks = fresh("GET", f"{base}/.well-known/jwks.json")
        assert jwks.status_code == 200
        keys = jwks.json()["keys"]
        assert len(keys) == 1
        kids.add(keys[0]["kid"])
    assert len(kids) == 1

    # One key file on disk, no temporary leftovers from the losing worker.
    assert sorted(p.name for p in (var_dir / "keys").iterdir()) == ["jwt-rs256-private.pem"]


def test_logout_in_one_worker_is_seen_by_the_other(server: tuple[str, Path]) -> None:
    base, _ = server
    fresh(
        "POST",
        f"{base}/api/v1/auth/register",
        json={"email": "bob@example.com", "password": PASSWORD},
    )
    pair = fresh(
        "POST", f"{base}/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD}
    ).json()
    out = fresh("POST", f"{base}/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert out.status_code == 204
    for _ in range(10):
        after = fresh("GET", f"{base}/api/v1/auth/me", pair["access_token"])
        assert after.status_code == 401
        assert after.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
