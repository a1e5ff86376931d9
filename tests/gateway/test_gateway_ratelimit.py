"""Rate limits: global across gunicorn workers with Redis, per user, fail-open/closed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import redis
import requests
from gateway_support import Echo, Minter, gateway_env
from problem_observer import observe

from authgate_common.problem_types import ProblemType
from gateway_service.ratelimit import RedisStore, _window_keys
from gateway_service.settings import Rate

LOGIN = "/api/v1/auth/login"


def avoid_window_edge(period: int = 3600, margin: float = 15.0) -> None:
    """Fixed windows reset on the period boundary: do not start a count right before one."""
    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.1)


def hammer(url: str, count: int, method: str = "GET", **kwargs) -> list[requests.Response]:
    """Send `count` requests in parallel, each on its own connection (spreads over workers)."""

    def one(_: int) -> requests.Response:
        return requests.request(method, url, timeout=10, **kwargs)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(count)))


def test_limit_is_global_across_workers(start_gateway, echo: Echo, redis_url, key_prefix):
    avoid_window_edge()
    gw = start_gateway(
        gateway_env(
            echo,
            REDIS_URL=redis_url,
            RATE_LIMIT_DEFAULT="10/hour",
            GATEWAY_RATE_LIMIT_KEY_PREFIX=key_prefix,
        ),
        workers=2,
    )
    responses = hammer(f"{gw.url}/api/v1/auth/refresh", 40, "POST", json={})
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 30
    allowed = [r for r in responses if r.status_code == 200]
    assert sorted(int(r.headers["RateLimit-Remaining"]) for r in allowed) == list(range(10))
    assert all(r.headers["RateLimit-Limit"] == "10" for r in allowed)
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["Content-Type"] == "application/problem+json"
    observe(refused.json(), ProblemType.RATE_LIMITED)
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert refused.headers["Retry-After"] == refused.headers["RateLimit-Reset"]


def test_memory_limits_are_per_process(start_gateway, echo: Echo):
    avoid_window_edge()
    gw = start_gateway(gateway_env(echo, RATE_LIMIT_DEFAULT="5/hour"), workers=1)
    statuses = [
        requests.post(f"{gw.url}/api/v1/auth/refresh", json={}, timeout=5).status_code
        for _ in range(8)
    ]
    assert statuses == [200] * 5 + [429] * 3


def test_auth_routes_stricter(start_gateway, echo: Echo, redis_url, key_prefix):
    avoid_window_edge()
    gw = start_gateway(
        gateway_env(
            echo,
            REDIS_URL=redis_url,
            RATE_LIMIT_DEFAULT="1000/hour",
            RATE_LIMIT_AUTH="3/hour",
            GATEWAY_RATE_LIMIT_KEY_PREFIX=key_prefix,
        )
    )
    logins = [requests.post(f"{gw.url}{LOGIN}", json={}, timeout=5) for _ in range(5)]
    assert [r.status_code for r in logins] == [200, 200, 200, 429, 429]
    assert logins[0].headers["RateLimit-Limit"] == "3"
    registers = [
        requests.post(f"{gw.url}/api/v1/auth/register", json={}, timeout=5) for _ in range(4)
    ]
    assert [r.status_code for r in registers] == [200, 200, 200, 429]
    other = requests.post(f"{gw.url}/api/v1/auth/refresh", json={}, timeout=5)
    assert other.status_code == 200
    assert other.headers["RateLimit-Limit"] == "1000"


def test_per_user_limit_across_client_ips(
    start_gateway, echo: Echo, minter: Minter, redis_url, key_prefix
):
    avoid_window_edge()
    gw = start_gateway(
        gateway_env(
            echo,
            REDIS_URL=redis_url,
            RATE_LIMIT_DEFAULT="4/hour",
            TRUSTED_PROXIES="127.0.0.0/8",
            GATEWAY_RATE_LIMIT_KEY_PREFIX=key_prefix,
        )
    )
    token = minter.token()
    statuses = []
    for i in range(6):  # a different client address every time: only the user bucket fills
        resp = requests.get(
            f"{gw.url}/api/v1/orders/1",
            timeout=5,
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": f"198.51.100.{i + 1}"},
        )
        statuses.append(resp.status_code)
    assert statuses == [200] * 4 + [429] * 2
    other_user = requests.get(
        f"{gw.url}/api/v1/orders/1",
        timeout=5,
        headers={"Authorization": f"Bearer {minter.token()}", "X-Forwarded-For": "198.51.100.99"},
    )
    assert other_user.status_code == 200


def test_redis_down_fails_closed_for_login_open_for_the_rest(
    start_gateway, echo: Echo, minter: Minter, private_redis
):
    gw = start_gateway(
        gateway_env(echo, REDIS_URL=private_redis.url, GATEWAY_REDIS_TIMEOUT_SECONDS="0.2")
    )
    token = minter.token()
    assert requests.post(f"{gw.url}{LOGIN}", json={}, timeout=5).status_code == 200
    assert requests.get(f"{gw.url}/readyz", timeout=5).status_code == 200
    private_redis.shutdown()
    time.sleep(0.2)
    for _ in range(3):
        started = time.monotonic()
        login = requests.post(f"{gw.url}{LOGIN}", json={}, timeout=5)
        assert time.monotonic() - started < 1.0
        assert login.status_code == 503
        assert login.headers["Content-Type"] == "application/problem+json"
        observe(login.json(), ProblemType.RATE_LIMIT_UNAVAILABLE)
        assert login.headers["Retry-After"] == "1"
        refresh = requests.post(f"{gw.url}/api/v1/auth/refresh", json={}, timeout=5)
        assert refresh.status_code == 200
        assert "RateLimit-Limit" not in refresh.headers
        # Without Redis no revocation can be checked: bearer requests fail closed too
        # (GATEWAY_REVOCATION_FAIL_OPEN=false), see test_gateway_revocation.
        orders = requests.get(
            f"{gw.url}/api/v1/orders/1", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert orders.status_code == 503
        observe(orders.json(), ProblemType.SESSION_CHECK_UNAVAILABLE)
    ready = requests.get(f"{gw.url}/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["detail"] == "Not ready: redis"


def test_fail_modes_configurable(start_gateway, echo: Echo, private_redis):
    gw = start_gateway(
        gateway_env(
            echo,
            REDIS_URL=private_redis.url,
            RATE_LIMIT_FAIL_OPEN="false",
            RATE_LIMIT_AUTH_FAIL_OPEN="true",
        )
    )
    private_redis.shutdown()
    time.sleep(0.2)
    assert requests.post(f"{gw.url}{LOGIN}", json={}, timeout=5).status_code == 200
    refresh = requests.post(f"{gw.url}/api/v1/auth/refresh", json={}, timeout=5)
    assert refresh.status_code == 503


def test_store_survives_script_flush_and_counts_exactly(private_redis):
    store = RedisStore.from_url(private_redis.url, 0.5)
    rate = Rate(3, 3600)
    buckets = ["t:ip:1", "t:user:1"]
    first = store.check(buckets, rate, "authgate:revoked-sid:abc")
    assert (first.usage.remaining, first.usage.allowed, first.revoked) == (2, True, False)
    redis.Redis.from_url(private_redis.url).script_flush()  # e.g. a Redis restart or failover
    redis.Redis.from_url(private_redis.url).set("authgate:revoked-sid:abc", 1)
    second = store.check(buckets, rate, "authgate:revoked-sid:abc")
    assert (second.usage.remaining, second.revoked) == (1, True)
    store.check(buckets, rate, None)
    fourth = store.check(buckets, rate, None)
    assert (fourth.usage.remaining, fourth.usage.allowed) == (0, False)
    ttl = redis.Redis.from_url(private_redis.url).ttl(
        _window_keys(["t:ip:1"], rate, time.time())[0]
    )
    assert 0 < ttl <= 3601
