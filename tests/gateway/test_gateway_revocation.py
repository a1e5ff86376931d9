"""Revocation reaches the gateway: by polling the auth service without Redis, and with
Redis down the gateway refuses bearer requests unless told to fail open.

Real gunicorn processes: the auth service (no Redis), the gateway in front of it, and the
echo upstream standing for "another service" on /api/v1/orders.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from falcon import testing
from gateway_support import Echo, Gateway, Minter, gateway_env, launch_gateway
from problem_observer import observe
from process_support import free_port, running_auth_service

from authgate_common.problem_types import ProblemType
from gateway_service.app import create_app
from gateway_service.settings import Settings

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
FEED = "/internal/v1/revoked-sessions"
# The bound: a revocation reaches every gateway worker within a few seconds
# (GATEWAY_REVOCATION_POLL_SECONDS, default 2).
DEADLINE_SECONDS = 5.0


@dataclass
class Stack:
    """The auth service, the gateway in front of it, and where the auth service keeps var/."""

    auth_url: str
    gateway: Gateway
    var_dir: Path

    @property
    def internal_token(self) -> str:
        """The token both services generated and share (the embedded default)."""
        return (self.var_dir / "internal" / "api-token").read_text().strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, echo: Echo) -> Iterator[Stack]:
    """No REDIS_URL and no INTERNAL_API_TOKEN: the `make run` configuration (one var/)."""
    root = tmp_path_factory.mktemp("revocation")
    with running_auth_service(root, LOG_FORMAT="console", INTERNAL_API_TOKEN="") as auth_url:
        routes = [
            {"prefix": "/api/v1/orders", "upstream": echo.url, "auth": "required"},
            # A catch-all to the auth service: even it must not expose /internal/.
            {"prefix": "/", "upstream": auth_url, "auth": "none"},
        ]
        gateway = launch_gateway(
            {
                "AUTH_SERVICE_URL": auth_url,
                "AUTHGATE_VAR_DIR": str(root),
                "INTERNAL_API_TOKEN": "",
                "GATEWAY_ROUTES": json.dumps(routes),
                "RATE_LIMIT_AUTH": "100000/minute",
            }
        )
        try:
            yield Stack(auth_url, gateway, root)
        finally:
            gateway.stop()


def bearer(token: str) -> dict[str, str]:
    """Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def new_user(stack: Stack) -> tuple[str, dict[str, str]]:
    """Register through the gateway and log in; (email, token pair)."""
    email = f"rev-{uuid.uuid4().hex[:12]}@example.com"
    base = f"{stack.gateway.url}/api/v1/auth"
    created = requests.post(
        f"{base}/register", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert created.status_code == 201, created.text
    return email, login(stack, email)


def login(stack: Stack, email: str, password: str = PASSWORD) -> dict[str, str]:
    """A new session's token pair."""
    resp = requests.post(
        f"{stack.gateway.url}/api/v1/auth/login",
        json={"email": email, "password": password},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    pair: dict[str, str] = resp.json()
    return pair


def order(stack: Stack, access_token: str) -> requests.Response:
    """A call to the other upstream, on a fresh connection (so either worker may answer)."""
    return requests.get(
        f"{stack.gateway.url}/api/v1/orders/42",
        headers={**bearer(access_token), "Connection": "close"},
        timeout=10,
    )


def until(condition: Callable[[], bool], deadline: float = DEADLINE_SECONDS) -> bool:
    """Poll `condition` until it holds or the deadline passes; whether it held."""
    end = time.monotonic() + deadline
    while True:
        if condition():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


def refused_by_every_worker(stack: Stack, access_token: str) -> Callable[[], bool]:
    """Eight fresh connections in a row all get 401 (the gateway runs two workers)."""
    return lambda: all(order(stack, access_token).status_code == 401 for _ in range(8))


def assert_revoked_answer(resp: requests.Response) -> None:
    """The gateway's own 401 for a revoked session."""
    assert resp.status_code == 401, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert "revoked" in resp.headers["WWW-Authenticate"]
    observe(resp.json(), ProblemType.INVALID_TOKEN)


def test_logout_reaches_the_gateway_without_redis(stack: Stack, echo: Echo):
    _, pair = new_user(stack)
    before = order(stack, pair["access_token"])
    assert before.status_code == 200, before.text
    assert before.json()["path"] == "/api/v1/orders/42"  # the echo upstream answered

    logout = requests.post(
        f"{stack.gateway.url}/api/v1/auth/logout",
        json={"refresh_token": pair["refresh_token"]},
        timeout=10,
    )
    assert logout.status_code == 204, logout.text

    assert until(refused_by_every_worker(stack, pair["access_token"])), (
        f"a logged-out token still passes the gateway after {DEADLINE_SECONDS}s"
    )
    hits = echo.hits()["echo"]
    assert_revoked_answer(order(stack, pair["access_token"]))
    # Refused at the gateway: the revoked token no longer reaches the other upstream.
    assert echo.hits()["echo"] == hits


def test_password_change_revokes_other_sessions_at_the_gateway(stack: Stack):
    email, kept = new_user(stack)
    other = login(stack, email)
    assert order(stack, other["access_token"]).status_code == 200

    changed = requests.put(
        f"{stack.gateway.url}/api/v1/users/me/password",
        headers=bearer(kept["access_token"]),
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        timeout=10,
    )
    assert changed.status_code == 204, changed.text

    assert until(refused_by_every_worker(stack, other["access_token"])), (
        "the other session's token still passes the gateway after a password change"
    )
    assert_revoked_answer(order(stack, other["access_token"]))
    # The session that changed the password goes on.
    assert order(stack, kept["access_token"]).status_code == 200


def test_gateway_with_redis_still_polls_the_feed(
    stack: Stack, start_gateway: Callable[..., Gateway], redis_url: str
):
    """Redis is only as good as the auth service's write to it; the feed backs it up.

    Here the auth service writes nothing to Redis (it has no REDIS_URL), as when its
    write failed: the gateway must still refuse the session within the poll interval.
    """
    prefix = f"test-gw:{uuid.uuid4().hex}:rl:"
    with_redis = start_gateway(
        {
            "AUTH_SERVICE_URL": stack.auth_url,
            "AUTHGATE_VAR_DIR": str(stack.var_dir),
            "INTERNAL_API_TOKEN": "",
            "REDIS_URL": redis_url,
            "GATEWAY_RATE_LIMIT_KEY_PREFIX": prefix,
            "RATE_LIMIT_AUTH": "100000/minute",
        }
    )
    _, pair = new_user(stack)
    me = f"{with_redis.url}/api/v1/auth/me"
    assert requests.get(me, headers=bearer(pair["access_token"]), timeout=10).status_code == 200
    requests.post(
        f"{stack.gateway.url}/api/v1/auth/logout",
        json={"refresh_token": pair["refresh_token"]},
        timeout=10,
    ).raise_for_status()

    def refused_at_the_gateway() -> bool:
        resp = requests.get(
            me, headers={**bearer(pair["access_token"]), "Connection": "close"}, timeout=10
        )
        # "revoked" in the challenge: the gateway refused it, not the auth service behind.
        return resp.status_code == 401 and "revoked" in resp.headers["WWW-Authenticate"]

    assert until(lambda: all(refused_at_the_gateway() for _ in range(8)))


def test_a_wrong_internal_token_is_logged_and_counted(
    stack: Stack, echo: Echo, caplog: pytest.LogCaptureFixture
):
    """A misconfigured gateway cannot learn revocations: operators must see why."""
    settings = Settings.from_env(
        gateway_env(echo, AUTH_SERVICE_URL=stack.auth_url, INTERNAL_API_TOKEN="w" * 40)
    )
    with caplog.at_level(logging.WARNING, logger="gateway_service.revocations"):
        client = testing.TestClient(create_app(settings))  # polls once at start-up
    assert "INTERNAL_API_TOKEN differs" in caplog.text
    metrics = client.simulate_get("/metrics").text
    assert "gateway_revocation_feed_failures_total 1.0" in metrics


@pytest.mark.parametrize(
    "header",
    [None, "", "wrong-" + "x" * 40, "Bearer something"],
    ids=["missing", "empty", "wrong", "bearer-shaped"],
)
def test_internal_feed_refuses_callers_without_the_token(stack: Stack, header: str | None):
    headers = {} if header is None else {"X-Internal-Token": header}
    resp = requests.get(f"{stack.auth_url}{FEED}", headers=headers, timeout=10)
    assert resp.status_code == 401, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["type"] == "https://authgate.dev/problems/invalid-internal-token"
    assert "items" not in resp.text


def test_internal_feed_lists_a_logout_for_the_gateway(stack: Stack):
    _, pair = new_user(stack)
    claims = json.loads(_b64(pair["access_token"].split(".")[1]))
    requests.post(
        f"{stack.gateway.url}/api/v1/auth/logout",
        json={"refresh_token": pair["refresh_token"]},
        timeout=10,
    ).raise_for_status()
    resp = requests.get(
        f"{stack.auth_url}{FEED}",
        headers={"X-Internal-Token": stack.internal_token},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    page = resp.json()
    assert page["has_more"] is False
    revoked = {item["session_id"]: item for item in page["items"]}
    assert claims["sid"] in revoked
    assert revoked[claims["sid"]]["expires_at"] > revoked[claims["sid"]]["revoked_at"]


@pytest.mark.parametrize(
    "path",
    [
        FEED,
        f"{FEED}?limit=10",
        "/INTERNAL/v1/revoked-sessions",
        "/api/v1/auth/../../internal/v1/revoked-sessions",
        "/api/v1/auth/%2e%2e/%2e%2e/internal/v1/revoked-sessions",
        "//internal//v1/revoked-sessions",
        "/internal",
    ],
)
def test_gateway_never_routes_the_internal_feed(stack: Stack, path: str):
    session = requests.Session()
    req = requests.Request(
        "GET", f"{stack.gateway.url}/", headers={"X-Internal-Token": stack.internal_token}
    ).prepare()
    req.url = f"{stack.gateway.url}{path}"  # sent as written, no client-side normalising
    resp = session.send(req, timeout=10)
    assert resp.status_code == 404, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert "items" not in resp.text


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def closed_redis_url() -> str:
    """A Redis URL on a port nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


def test_redis_unreachable_refuses_bearer_requests_unless_told_to_fail_open(
    start_gateway: Callable[..., Gateway], echo: Echo, minter: Minter
):
    closed = start_gateway(gateway_env(echo, REDIS_URL=closed_redis_url()))
    hits = echo.hits()["echo"]
    for _ in range(3):
        resp = requests.get(
            f"{closed.url}/api/v1/orders/1", headers=bearer(minter.token()), timeout=5
        )
        assert resp.status_code == 503, resp.text
        assert resp.headers["Content-Type"] == "application/problem+json"
        observe(resp.json(), ProblemType.SESSION_CHECK_UNAVAILABLE)
        assert resp.headers["Retry-After"] == "1"
    assert echo.hits()["echo"] == hits  # nothing reached the upstream
    # A route without tokens is not affected (its rate limit fails open by default).
    assert requests.get(f"{closed.url}/api/v1/catalog/1", timeout=5).status_code == 200
    ready = requests.get(f"{closed.url}/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.headers["Content-Type"] == "application/problem+json"
    assert "redis" in ready.json()["detail"]

    # The switch the operator keeps: availability over refusing revoked sessions.
    open_ = start_gateway(
        gateway_env(echo, REDIS_URL=closed_redis_url(), GATEWAY_REVOCATION_FAIL_OPEN="true")
    )
    resp = requests.get(f"{open_.url}/api/v1/orders/1", headers=bearer(minter.token()), timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.json()["path"] == "/api/v1/orders/1"
