"""Fixed-window rate limits (Redis or process memory) and the revoked-session check."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway_service.breaker import CircuitBreaker
from gateway_service.settings import Rate

log = logging.getLogger(__name__)

# One round-trip: count every bucket of the request, and (optionally) look up the
# revoked-session key in the same call. KEYS = buckets..., [revoked key]; ARGV[1] = window
# seconds, ARGV[2] = number of bucket keys.
_SCRIPT = """
local out = {}
local buckets = tonumber(ARGV[2])
for i = 1, buckets do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end
  out[i] = n
end
if #KEYS > buckets then
  out[buckets + 1] = redis.call('EXISTS', KEYS[buckets + 1])
end
return out
"""


class StoreUnavailable(Exception):
    """The shared counter store (Redis) did not answer."""


@dataclass(frozen=True, slots=True)
class Usage:
    """The state of the tightest bucket after counting this request."""

    limit: int
    remaining: int
    reset: int
    allowed: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the store said about one request."""

    usage: Usage | None
    revoked: bool


class Store(Protocol):
    """Counts requests per bucket and checks revoked sessions."""

    shared: bool

    def check(self, buckets: list[str], rate: Rate | None, revoked_key: str | None) -> Outcome:
        """Count the request in every bucket; raise StoreUnavailable when the store fails."""
        ...


def _usage(counts: list[int], rate: Rate, now: float) -> Usage:
    highest = max(counts)
    reset = max(1, int(rate.period - now % rate.period + 0.999))
    return Usage(
        limit=rate.limit,
        remaining=max(0, rate.limit - highest),
        reset=reset,
        allowed=highest <= rate.limit,
    )


def _window_keys(buckets: list[str], rate: Rate, now: float) -> list[str]:
    window = int(now // rate.period)
    return [f"{bucket}:{rate.period}:{window}" for bucket in buckets]


class MemoryStore:
    """Per-process counters: each gunicorn worker counts on its own."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = 100_000) -> None:
        """Start empty."""
        self._clock = clock
        self._max_keys = max_keys
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def check(self, buckets: list[str], rate: Rate | None, revoked_key: str | None) -> Outcome:
        """Count the request; revocation is unknown without Redis."""
        if rate is None or not buckets:
            return Outcome(None, False)
        now = self._clock()
        expires = (now // rate.period + 1) * rate.period
        counts = []
        with self._lock:
            if len(self._counts) > self._max_keys:
                self._purge(now)
            for key in _window_keys(buckets, rate, now):
                count = self._counts.get(key, (0, expires))[0] + 1
                self._counts[key] = (count, expires)
                counts.append(count)
        return Outcome(_usage(counts, rate, now), False)

    def _purge(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}


class RedisStore:
    """Counters shared by all workers and replicas, in one Lua call per request."""

    shared = True

    def __init__(
        self,
        client: redis.Redis,
        breaker: CircuitBreaker,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use the given client; the breaker stops us waiting on a dead Redis every request."""
        self._client = client
        self._sha = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        self._breaker = breaker
        self._clock = clock

    @classmethod
    def from_url(cls, url: str, timeout: float) -> RedisStore:
        """Build a client with short timeouts and no retries (we fail open/closed instead)."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        return cls(client, CircuitBreaker(threshold=1, reset_seconds=1.0))

    def _evalsha(self, keys: list[str], ttl: int, bucket_count: int) -> list[int]:
        # PERF: EVALSHA straight through execute_command (redis-py's Script wrapper costs
        # more than the round-trip); load the script once when Redis does not know it.
        # NOTE: execute_command is unannotated in redis-py; the script returns integers only.
        counts: list[int]
        try:
            counts = self._client.execute_command(
                "EVALSHA", self._sha, len(keys), *keys, ttl, bucket_count
            )
        except redis.exceptions.NoScriptError:
            self._client.script_load(_SCRIPT)
            counts = self._client.execute_command(
                "EVALSHA", self._sha, len(keys), *keys, ttl, bucket_count
            )
        return counts

    @property
    def client(self) -> redis.Redis:
        """The Redis client (readiness checks ping it)."""
        return self._client

    def check(self, buckets: list[str], rate: Rate | None, revoked_key: str | None) -> Outcome:
        """Count the request and look up the revoked key in one round-trip."""
        if (rate is None or not buckets) and revoked_key is None:
            return Outcome(None, False)
        if self._breaker.before_call() is not None:
            raise StoreUnavailable
        now = self._clock()
        keys = _window_keys(buckets, rate, now) if rate is not None else []
        bucket_count = len(keys)
        if revoked_key is not None:
            keys.append(revoked_key)
        ttl = rate.period + 1 if rate is not None else 1
        try:
            result = self._evalsha(keys, ttl, bucket_count)
        except redis.RedisError as ex:
            self._breaker.record_failure()
            log.warning("rate-limit store unavailable: %s", type(ex).__name__)
            raise StoreUnavailable from None
        self._breaker.record_success()
        counts = [int(n) for n in result[:bucket_count]]
        usage = _usage(counts, rate, now) if rate is not None and counts else None
        revoked = revoked_key is not None and bool(int(result[bucket_count]))
        return Outcome(usage, revoked)
