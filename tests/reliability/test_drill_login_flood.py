"""Drill 10: a login flood at four times what bcrypt can serve.

The gateway's limiter must answer the excess with 429 before any password is hashed, so
the flood cannot take the CPU from everyone else: other routes stay within twice their
idle latency (a ratio measured in the same run, not an absolute time).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import bcrypt
from reliability_support import (
    PASSWORD,
    PrivatePostgres,
    PrivateRedis,
    record,
    register_and_login,
    session,
    start_stack,
)

ROUNDS = 12
FLOOD_SECONDS = 12.0
AUTH_LIMIT = 20  # RATE_LIMIT_AUTH per client address per minute (the default)


def bcrypt_bound() -> float:
    """Logins per second the machine's cores can hash at ROUNDS (the login throughput bound)."""
    hashed = bcrypt.hashpw(b"x", bcrypt.gensalt(ROUNDS))
    started = time.perf_counter()
    bcrypt.checkpw(b"x", hashed)
    one = time.perf_counter() - started

    return (os.cpu_count() or 1) / one


def median_latency(url: str, headers: dict[str, str], count: int = 25) -> float:
    timings = []
    with session() as client:
        for _ in range(count):
            started = time.perf_counter()
            assert client.get(url, headers=headers, timeout=10).status_code == 200
            timings.append(time.perf_counter() - started)
            time.sleep(0.05)
    return statistics.median(timings)


def test_login_flood_is_limited_before_hashing(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    stack = start_stack(
        tmp_path,
        private_postgres.url,
        private_redis.url,
        auth_env={"BCRYPT_ROUNDS": str(ROUNDS)},
        gateway_env={"RATE_LIMIT_AUTH": f"{AUTH_LIMIT}/minute"},
    )
    try:
        pair = register_and_login(stack.api, "flood@example.com")
        me = f"{stack.api}/auth/me"
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        idle = median_latency(me, headers)
        rate = 4 * bcrypt_bound()
        total = int(rate * FLOOD_SECONDS)
        statuses: Counter[int] = Counter()
        lock = threading.Lock()
        stop = threading.Event()

        def flood(share: int) -> None:
            interval = 4 / rate  # four flooders share the rate
            with session() as client:
                for _ in range(share):
                    if stop.is_set():
                        return
                    started = time.monotonic()
                    body = {"email": "flood@example.com", "password": PASSWORD}
                    status = client.post(
                        f"{stack.api}/auth/login", json=body, timeout=30
                    ).status_code
                    with lock:
                        statuses[status] += 1
                    time.sleep(max(0.0, interval - (time.monotonic() - started)))

        flooders = [threading.Thread(target=flood, args=(total // 4,)) for _ in range(4)]
        for flooder in flooders:
            flooder.start()
        # The limiter lets its budget through (AUTH_LIMIT logins, hashed as they should
        # be); the drill is about what follows: the flood's excess must cost nothing.
        deadline = time.monotonic() + FLOOD_SECONDS / 2
        while time.monotonic() < deadline:
            with lock:
                if statuses[429] and statuses[200] + statuses[401] >= AUTH_LIMIT:
                    break
            time.sleep(0.05)
        loaded = median_latency(me, headers)
        assert any(f.is_alive() for f in flooders), "the flood ended before it was measured"
        stop.set()
        for flooder in flooders:
            flooder.join(60)
        hashed = statuses[200] + statuses[401]
        assert set(statuses) <= {200, 429}, statuses
        # Only what the limiter lets through reaches bcrypt.
        assert hashed <= AUTH_LIMIT, statuses
        assert loaded / idle <= 2.0, (
            statuses,
            f"GET /auth/me: {loaded * 1000:.1f} ms under the flood vs {idle * 1000:.1f} ms idle",
        )
        record(
            "10 login flood",
            f"logins at 4x the bcrypt bound ({rate:.0f}/s for {FLOOD_SECONDS:.0f}s, "
            f"{ROUNDS} rounds) from one address",
            f"{statuses[429]} x 429 before hashing, {hashed} hashed (limit {AUTH_LIMIT}/min); "
            f"GET /auth/me {loaded / idle:.2f}x its idle latency",
            lost=0,
        )
    finally:
        stack.stop()
