"""The auth service under real gunicorn with two workers sharing one dev key and one database.

Both workers start with an empty key directory and race to create the dev signing key;
a token signed by one worker must verify in the other, whichever serves the next request.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from auth_server import fresh_connection, running_auth_service
from problem_observer import observe

from authgate_common.problem_types import ProblemType

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
LOGINS = 48
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Two workers starting with an empty key directory: they race to create the key."""
    root = tmp_path_factory.mktemp("gunicorn")
    with running_auth_service(root) as base:
        yield base, root / "var"


def test_two_workers_share_one_key_and_one_database(server: tuple[str, Path]) -> None:
    base, var_dir = server
    registered = fresh_connection(
        "POST",
        f"{base}/api/v1/auth/register",
        json={"email": "ada@example.com", "password": PASSWORD},
    )
    assert registered.status_code == 201, registered.text

    def login(_: int) -> requests.Response:
        return fresh_connection(
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
        return fresh_connection("GET", f"{base}/api/v1/auth/me", token)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(me, tokens + tokens[::-1]))
    assert [r.status_code for r in answers] == [200] * (2 * LOGINS)
    assert {r.json()["email"] for r in answers} == {"ada@example.com"}

    kids = set()
    for _ in range(20):
        jwks = fresh_connection("GET", f"{base}/.well-known/jwks.json")
        assert jwks.status_code == 200
        keys = jwks.json()["keys"]
        assert len(keys) == 1
        kids.add(keys[0]["kid"])
    assert len(kids) == 1

    # One signing key and one MFA encryption key on disk, readable by the owner only, and
    # no temporary leftovers from the losing worker.
    keys = sorted((var_dir / "keys").iterdir())
    assert [p.name for p in keys] == ["jwt-rs256-private.pem", "mfa-fernet.key"]
    assert {p.stat().st_mode & 0o777 for p in keys} == {0o600}


def test_logout_in_one_worker_is_seen_by_the_other(server: tuple[str, Path]) -> None:
    base, _ = server
    fresh_connection(
        "POST",
        f"{base}/api/v1/auth/register",
        json={"email": "bob@example.com", "password": PASSWORD},
    )
    pair = fresh_connection(
        "POST", f"{base}/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD}
    ).json()
    out = fresh_connection(
        "POST", f"{base}/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}
    )
    assert out.status_code == 204
    for _ in range(10):
        after = fresh_connection("GET", f"{base}/api/v1/auth/me", pair["access_token"])
        assert after.status_code == 401
        assert after.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_request_gunicorn_refuses_is_a_problem(server: tuple[str, Path]) -> None:
    # Never reaches the app: gunicorn refuses the header name; the worker answers in the
    # services' error format (deploy/gunicorn_worker.py), not gunicorn's HTML page.
    base, _ = server
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/auth/me HTTP/1.1\r\nBad Name: 1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"\r\nContent-Type: application/problem+json\r\n" in head
    problem = json.loads(body)
    observe(problem, ProblemType.BAD_REQUEST)
    assert b"X-Request-ID: " + problem["request_id"].encode() in head
