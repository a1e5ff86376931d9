"""Drill 9: slow clients (slowloris) against the gateway.

Clients that send their headers one byte a second, or a body that never ends, must be cut
off by the gateway's timeouts, and must not starve other clients of worker threads.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import requests
from reliability_support import (
    PrivatePostgres,
    PrivateRedis,
    record,
    register_and_login,
    session,
    start_stack,
)

SLOW_HEADERS = 24  # more than the gateway's 2 workers x 8 threads
SLOW_BODIES = 8
DRILL_SECONDS = 20.0


class SlowClient(threading.Thread):
    """Sends `opening`, then one byte a second until the server hangs up or time is up."""

    def __init__(self, port: int, opening: bytes, drip: bytes, until: float) -> None:
        super().__init__(daemon=True)
        self._port, self._opening, self._drip, self._until = port, opening, drip, until
        self.cut_after: float | None = None  # seconds until the server closed on us
        self.answer = b""

    def run(self) -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self._port), timeout=5) as sock:
            sock.sendall(self._opening)
            sock.settimeout(1.0)
            while time.monotonic() < self._until:
                try:
                    sock.sendall(self._drip)
                    chunk = sock.recv(4096)
                    if not chunk:
                        self.cut_after = time.monotonic() - started
                        return
                    self.answer += chunk
                except TimeoutError:
                    continue
                except OSError:
                    self.cut_after = time.monotonic() - started
                    return


def test_slow_clients_are_cut_off_and_starve_nobody(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    stack = start_stack(tmp_path, private_postgres.url, private_redis.url)
    try:
        pair = register_and_login(stack.api, "slow@example.com")
        port = int(stack.gateway.url.rsplit(":", 1)[1])
        until = time.monotonic() + DRILL_SECONDS
        slow = [
            SlowClient(port, b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: ", b"a", until)
            for _ in range(SLOW_HEADERS)
        ] + [
            SlowClient(
                port,
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: gw\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
                b" ",
                until,
            )
            for _ in range(SLOW_BODIES)
        ]
        for client in slow:
            client.start()
        time.sleep(2.0)
        latencies: list[float] = []
        failures: list[str] = []
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        with session() as client:
            while time.monotonic() < until - 1:
                started = time.monotonic()
                try:
                    answer = client.get(f"{stack.api}/auth/me", headers=headers, timeout=5)
                    if answer.status_code != 200:
                        failures.append(str(answer.status_code))
                except requests.RequestException as ex:
                    failures.append(type(ex).__name__)
                latencies.append(time.monotonic() - started)
                time.sleep(0.2)
        for client in slow:
            client.join(DRILL_SECONDS + 10)
        cut = [c.cut_after for c in slow if c.cut_after is not None]
        assert not failures, failures
        assert max(latencies) < 2.0, f"slowest normal request {max(latencies):.2f}s"
        assert len(cut) == len(slow), f"{len(slow) - len(cut)} slow clients were never cut off"
        record(
            "9 slow clients",
            f"{SLOW_HEADERS} header drips and {SLOW_BODIES} endless bodies, 1 byte/s, "
            f"against the gateway",
            f"{len(latencies)} normal requests meanwhile: all 200, slowest "
            f"{max(latencies):.2f}s; every slow client cut after {min(cut):.0f}-{max(cut):.0f}s",
            lost=0,
        )
    finally:
        stack.stop()
