"""Drills 3 and 5: the auth service killed under load; both services restarted under load.

Drill 3: SIGKILL takes the auth service's workers (gunicorn's master starts new ones), then
the whole service (started again by hand). The gateway must answer 502 or its breaker's
503 with Retry-After -- never a 500 or a hang -- and recover by itself.
Drill 5: a graceful restart (SIGHUP: new workers, old ones drain) and a stop (SIGTERM)
under load: no request in flight is cut off, and no client sees a refused connection
while a worker lives.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import requests
from reliability_support import (
    PASSWORD,
    Load,
    PrivatePostgres,
    PrivateRedis,
    Stack,
    record,
    register_and_login,
    session,
    start_stack,
)

RECOVERY_DEADLINE = 60.0


def wait_for_success(url: str, headers: dict[str, str], deadline: float) -> float:
    """Poll until the gateway answers 200; the seconds it took."""
    started = time.monotonic()
    with session() as client:
        while time.monotonic() - started < deadline:
            try:
                if client.get(url, headers=headers, timeout=5).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.1)
    raise AssertionError(f"{url} did not recover within {deadline}s")


def me_load(stack: Stack, access_token: str, threads: int = 3) -> Load:
    headers = {"Authorization": f"Bearer {access_token}"}

    def me(client: requests.Session) -> requests.Response:
        return client.get(f"{stack.api}/auth/me", headers=headers, timeout=15)

    return Load(me, threads=threads)


def test_auth_service_killed_under_load(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    stack = start_stack(tmp_path, private_postgres.url, private_redis.url)
    try:
        pair = register_and_login(stack.api, "killed@example.com")
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        me_url = f"{stack.api}/auth/me"
        load = me_load(stack, pair["access_token"])
        with load.running():
            time.sleep(1.0)
            # 1. Every worker killed: the master starts new ones.
            for pid in stack.auth.worker_pids():
                os.kill(pid, signal.SIGKILL)
            respawned = wait_for_success(me_url, headers, RECOVERY_DEADLINE)
            time.sleep(1.0)
            # 2. The whole service killed (master and workers), then started again.
            workers = stack.auth.worker_pids()
            stack.auth.signal(signal.SIGKILL)
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            assert stack.auth.proc is not None
            stack.auth.proc.wait(10)
            time.sleep(2.0)
            down = load.statuses(load.between(time.monotonic() - 1.5, time.monotonic()))
            stack.auth.start()
            restarted = wait_for_success(me_url, headers, RECOVERY_DEADLINE)
            time.sleep(1.0)
        statuses = load.statuses()
        # Documented answers only: 502 (unreachable), 503 (breaker open), never 500 or none.
        assert set(statuses) <= {200, 502, 503}, statuses
        assert set(down) <= {502, 503} and down, down
        refused = [o for o in load.outcomes if o.status in (502, 503)]
        assert all(o.problem_type for o in refused), "every refusal is problem+json"
        assert max(o.seconds for o in load.outcomes) < 10
        # The session and the user survived: nothing was lost.
        with session() as client:
            body = {"email": "killed@example.com", "password": PASSWORD}
            assert client.post(f"{stack.api}/auth/login", json=body, timeout=10).status_code == 200
        record(
            "3 auth service killed",
            "SIGKILL to every auth worker, then to the whole service, under /auth/me load",
            f"{statuses[502]} x 502, {statuses[503]} x 503 (breaker, Retry-After), no 500; "
            f"200 again {respawned:.1f}s after the workers died, "
            f"{restarted:.1f}s after a restart",
            lost=0,
        )
    finally:
        stack.stop()


def login_load(stack: Stack, email: str, threads: int = 4) -> Load:
    def login(client: requests.Session) -> requests.Response:
        body = {"email": email, "password": PASSWORD}
        return client.post(f"{stack.api}/auth/login", json=body, timeout=15)

    return Load(login, threads=threads)


def test_graceful_restart_under_load(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    stack = start_stack(
        tmp_path,
        private_postgres.url,
        private_redis.url,
        # Slow logins (bcrypt) keep requests in flight across the restart.
        auth_env={"BCRYPT_ROUNDS": "10"},
    )
    try:
        email = "rolling@example.com"
        register_and_login(stack.api, email)
        load = login_load(stack, email)
        with load.running():
            time.sleep(1.5)
            # A rolling restart of each service: gunicorn starts new workers, then lets
            # the old ones finish what they hold (graceful_timeout) and exit.
            old_auth = set(stack.auth.worker_pids())
            stack.auth.signal(signal.SIGHUP)
            wait_for_new_workers(stack.auth.worker_pids, old_auth)
            time.sleep(1.0)
            old_gateway = set(stack.gateway.worker_pids())
            stack.gateway.signal(signal.SIGHUP)
            wait_for_new_workers(stack.gateway.worker_pids, old_gateway)
            time.sleep(1.5)
        statuses = load.statuses()
        assert set(statuses) == {200}, (statuses, [o.error for o in load.outcomes if o.error])
        rolled = len(load.outcomes)
        # A stop (SIGTERM) under load: requests already in flight still complete.
        in_flight = login_load(stack, email)
        with in_flight.running():
            time.sleep(1.5)
            stop_sent = time.monotonic()
            stack.gateway.signal(signal.SIGTERM)
            stack.auth.signal(signal.SIGTERM)
            assert stack.gateway.proc is not None and stack.auth.proc is not None
            stack.gateway.proc.wait(30)
            stack.auth.proc.wait(30)
        started_before = [o for o in in_flight.outcomes if o.started < stop_sent]
        cut = [o for o in started_before if o.status != 200]
        assert not cut, [(o.status, o.error) for o in cut]
        record(
            "5 rolling restart",
            "SIGHUP to auth then gateway under login load; then SIGTERM to both",
            f"{rolled} logins across both restarts: all 200, no refused connection; "
            f"{len(started_before)} in flight at SIGTERM: all completed 200",
            lost=0,
        )
    finally:
        stack.gateway.proc = (
            None
            if stack.gateway.proc and stack.gateway.proc.poll() is not None
            else stack.gateway.proc
        )
        stack.auth.proc = (
            None if stack.auth.proc and stack.auth.proc.poll() is not None else stack.auth.proc
        )
        stack.stop()


def wait_for_new_workers(current: callable[[], list[int]], old: set[int]) -> None:  # type: ignore[valid-type]
    """Wait until every old worker has gone and new ones serve (gunicorn's HUP dance)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        pids = set(current())
        if pids and not pids & old:
            return
        time.sleep(0.2)
    raise AssertionError("the old workers did not exit")
