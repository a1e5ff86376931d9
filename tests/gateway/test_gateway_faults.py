"""Upstream failures: 502 when down, 504 when slow, the breaker, and what is retried."""

from __future__ import annotations

import json
import time

import requests
from gateway_support import Echo, Gateway, free_port, gateway_env
from problem_observer import assert_problem_type

from authgate_common.problem_types import ProblemType

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def routes_to(url: str, prefix: str = "/api/v1/flaky") -> str:
    """GATEWAY_ROUTES with one public route to url."""
    return json.dumps(
        [
            {"prefix": prefix, "upstream": url, "auth": "none"},
            {"prefix": "/api/v1/auth", "upstream": url, "auth": "none"},
        ]
    )


def assert_problem(resp: requests.Response, status: int, code: str) -> None:
    """A problem+json of this status and registered type, leaking no internal address."""
    assert resp.status_code == status, resp.text
    body = assert_problem_type(resp, ProblemType(code))
    assert body["request_id"] == resp.headers["X-Request-ID"]
    assert "127.0.0.1" not in resp.text and "Traceback" not in resp.text


def test_upstream_down_is_502_quickly(start_gateway, echo: Echo):
    down = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(gateway_env(echo, GATEWAY_ROUTES=routes_to(down)))
    started = time.monotonic()
    resp = requests.get(f"{gw.url}/api/v1/flaky/x", timeout=10)
    assert time.monotonic() - started < 1.0
    assert_problem(resp, 502, "upstream-unreachable")


def test_slow_upstream_is_504(gateway: Gateway):
    started = time.monotonic()
    resp = requests.get(
        f"{gateway.url}/api/v1/catalog/slow", headers={"X-Echo-Sleep": "3"}, timeout=10
    )
    elapsed = time.monotonic() - started
    assert_problem(resp, 504, "upstream-timeout")
    assert 1.4 < elapsed < 2.8  # GATEWAY_READ_TIMEOUT=1.5


def test_breaker_opens_then_closes_after_recovery(start_gateway, echo: Echo, raw_upstream):
    port = free_port()
    gw = start_gateway(
        gateway_env(
            echo,
            GATEWAY_ROUTES=routes_to(f"http://127.0.0.1:{port}"),
            GATEWAY_BREAKER_FAILURES="3",
            GATEWAY_BREAKER_RESET_SECONDS="1.5",
        ),
        workers=1,
    )
    for _ in range(3):
        assert_problem(
            requests.get(f"{gw.url}/api/v1/flaky/x", timeout=5), 502, "upstream-unreachable"
        )
    upstream = raw_upstream(OK, port)  # the upstream recovers, but the breaker is open
    started = time.monotonic()
    resp = requests.get(f"{gw.url}/api/v1/flaky/x", timeout=5)
    assert time.monotonic() - started < 0.5
    assert_problem(resp, 503, "upstream-unavailable")
    assert 1 <= int(resp.headers["Retry-After"]) <= 2
    assert upstream.requests == []  # refused without trying
    time.sleep(1.6)
    resp = requests.get(f"{gw.url}/api/v1/flaky/x", timeout=5)  # half-open trial
    assert resp.status_code == 200
    assert resp.json() == {}
    for _ in range(3):
        assert requests.get(f"{gw.url}/api/v1/flaky/x", timeout=5).status_code == 200
    assert len(upstream.requests) == 4


def test_half_open_trial_failure_reopens(start_gateway, echo: Echo):
    down = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(
        gateway_env(
            echo,
            GATEWAY_ROUTES=routes_to(down),
            GATEWAY_BREAKER_FAILURES="2",
            GATEWAY_BREAKER_RESET_SECONDS="1",
        ),
        workers=1,
    )
    for _ in range(2):
        assert requests.get(f"{gw.url}/api/v1/flaky/x", timeout=5).status_code == 502
    assert requests.get(f"{gw.url}/api/v1/flaky/x", timeout=5).status_code == 503
    time.sleep(1.1)
    assert requests.get(f"{gw.url}/api/v1/flaky/x", timeout=5).status_code == 502  # trial
    assert requests.get(f"{gw.url}/api/v1/flaky/x", timeout=5).status_code == 503


def test_only_idempotent_methods_are_retried(start_gateway, echo: Echo, raw_upstream):
    # An upstream that reads the request and hangs up without answering.
    upstream = raw_upstream(b"")
    gw = start_gateway(
        gateway_env(echo, GATEWAY_ROUTES=routes_to(upstream.url), GATEWAY_BREAKER_FAILURES="100"),
        workers=1,
    )
    cases = [
        ("GET", "/api/v1/flaky/x", 2),
        ("PUT", "/api/v1/flaky/x", 2),
        ("POST", "/api/v1/flaky/x", 1),
        ("PATCH", "/api/v1/flaky/x", 1),
        ("POST", "/api/v1/auth/refresh", 1),
    ]
    for method, path, expected in cases:
        upstream.requests.clear()
        resp = requests.request(method, f"{gw.url}{path}", data=b"{}", timeout=5)
        assert_problem(resp, 502, "upstream-unreachable")
        assert len(upstream.requests) == expected, (method, path)
        assert all(r.startswith(method.encode()) for r in upstream.requests)
