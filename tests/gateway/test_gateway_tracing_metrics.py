"""Gateway metrics beyond request counts: 429s, breaker state, upstream latency, workers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from falcon import testing
from gateway_support import Echo, Gateway, Minter, free_port, gateway_env

from gateway_service.app import create_app
from gateway_service.settings import Settings


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None when it is absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def with_dead_route(echo: Echo, **overrides: str) -> dict[str, str]:
    """The usual test routes plus /api/v1/dead -> a port nothing listens on."""
    env = gateway_env(echo, **overrides)
    routes = json.loads(env["GATEWAY_ROUTES"])
    routes.append(
        {
            "prefix": "/api/v1/dead",
            "upstream": f"http://127.0.0.1:{free_port()}",
            "auth": "none",
            "rate_limit": "none",
        }
    )
    env["GATEWAY_ROUTES"] = json.dumps(routes)
    return env


def test_rate_limit_rejections_are_counted_by_route_and_policy(
    settings_for: Callable[..., Settings], minter: Minter
) -> None:
    client = testing.TestClient(create_app(settings_for(RATE_LIMIT_DEFAULT="2/minute")))
    headers = {"Authorization": f"Bearer {minter.token()}"}
    statuses = [
        client.simulate_get("/api/v1/orders/1", headers=headers).status_code for _ in "abcd"
    ]
    assert statuses == [200, 200, 429, 429]
    text = client.simulate_get("/metrics").text
    value = sample(
        text, "gateway_ratelimit_rejections_total", route="/api/v1/orders", policy="default"
    )
    assert value == 2.0
    # The refusals are also plain requests by status, as before.
    assert (
        sample(text, "gateway_requests_total", route="/api/v1/orders", method="GET", status="429")
        == 2.0
    )


def test_upstream_latency_is_the_upstreams_time(settings_for: Callable[..., Settings]) -> None:
    client = testing.TestClient(create_app(settings_for()))
    assert client.simulate_get("/api/v1/catalog/fast").status_code == 200
    slow = client.simulate_get("/api/v1/catalog/slow", headers={"X-Echo-Sleep": "0.3"})
    assert slow.status_code == 200
    text = client.simulate_get("/metrics").text
    # Upstreams are named by their first route prefix, never by host or port.
    upstream = "/api/v1/auth"
    assert sample(text, "gateway_upstream_duration_seconds_count", upstream=upstream) == 2.0
    assert (
        sample(text, "gateway_upstream_duration_seconds_bucket", upstream=upstream, le="0.25")
        == 1.0
    )
    assert (
        sample(text, "gateway_upstream_duration_seconds_bucket", upstream=upstream, le="0.5") == 2.0
    )
    assert "127.0.0.1" not in text


def test_breaker_state_follows_the_upstream(echo: Echo) -> None:
    env = with_dead_route(
        echo,
        GATEWAY_BREAKER_FAILURES="2",
        GATEWAY_BREAKER_RESET_SECONDS="0.2",
        GATEWAY_UPSTREAM_RETRIES="0",
    )
    client = testing.TestClient(create_app(Settings.from_env(env)))

    def state(upstream: str) -> dict[str, float | None]:
        text = client.simulate_get("/metrics").text
        return {
            name: sample(text, "gateway_circuit_breaker_state", upstream=upstream, state=name)
            for name in ("closed", "open", "half_open")
        }

    def opened() -> float | None:
        text = client.simulate_get("/metrics").text
        return sample(text, "gateway_circuit_breaker_opened_total", upstream="/api/v1/dead")

    closed = {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    # Every upstream is reported from the start, so "closed" is a series, not an absence.
    assert state("/api/v1/dead") == closed
    assert state("/api/v1/auth") == closed
    assert [client.simulate_get("/api/v1/dead/x").status_code for _ in "ab"] == [502, 502]
    assert state("/api/v1/dead") == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    assert opened() == 1.0
    assert client.simulate_get("/api/v1/dead/x").status_code == 503  # fails fast
    assert state("/api/v1/auth") == closed  # the other upstream is unaffected

    time.sleep(0.3)
    # The trial request goes through (half-open), fails, and opens the breaker again.
    assert client.simulate_get("/api/v1/dead/x").status_code == 502
    assert state("/api/v1/dead")["open"] == 1.0
    assert opened() == 2.0


@pytest.mark.slow
def test_gunicorn_workers_report_together(
    start_gateway: Callable[..., Gateway], echo: Echo, minter: Minter, tmp_path: Path
) -> None:
    env = with_dead_route(
        echo,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        RATE_LIMIT_DEFAULT="3/minute",  # in memory: per worker
        GATEWAY_BREAKER_FAILURES="1",
        GATEWAY_UPSTREAM_RETRIES="0",
    )
    gateway = start_gateway(env, workers=2)

    def closed_auth_breakers() -> float | None:
        text = requests.get(f"{gateway.url}/metrics", timeout=5).text
        return sample(
            text, "gateway_circuit_breaker_state", upstream="/api/v1/auth", state="closed"
        )

    # Each worker reports its breakers once it has booted: the sum is the number of workers.
    deadline = time.monotonic() + 15
    while closed_auth_breakers() != 2.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert closed_auth_breakers() == 2.0
    headers = {"Authorization": f"Bearer {minter.token()}", "Connection": "close"}
    statuses = []
    for _ in range(16):  # new connections: both workers may get some
        with requests.Session() as session:
            result = session.get(f"{gateway.url}/api/v1/orders/1", headers=headers, timeout=5)
            statuses.append(result.status_code)
    assert set(statuses) == {200, 429} and statuses.count(429) >= 10, statuses
    assert requests.get(f"{gateway.url}/api/v1/dead/x", timeout=5).status_code == 502

    text = requests.get(f"{gateway.url}/metrics", timeout=5).text
    # Whichever worker answers the scrape, it reports every worker's counts.
    rejected = sample(
        text, "gateway_ratelimit_rejections_total", route="/api/v1/orders", policy="default"
    )
    assert rejected == statuses.count(429)
    reached = sample(text, "gateway_upstream_duration_seconds_count", upstream="/api/v1/auth")
    assert reached == statuses.count(200)
    # Each worker has its own breakers: one opened for the dead upstream, the other did not.
    dead = {
        name: sample(text, "gateway_circuit_breaker_state", upstream="/api/v1/dead", state=name)
        for name in ("closed", "open", "half_open")
    }
    assert dead == {"closed": 1.0, "open": 1.0, "half_open": 0.0}
