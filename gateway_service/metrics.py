"""Prometheus metrics, labelled by route prefix or template (never raw paths or hosts)."""

from __future__ import annotations

from typing import Any

import falcon
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway_service.breaker import OPEN, STATES

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# PERF: labelled children are cached per label values (labels() costs a lock, a tuple
# and str checks per call); past this many the cache stops growing (methods are the
# client's choice) and labels() is simply called.
_CHILD_CACHE_LIMIT = 1000


class Metrics:
    """The gateway's counters; correct under several gunicorn workers via multiprocess mode."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        """Register the metrics in a registry of our own (tests build many apps).

        NOTE: prometheus_client itself reads PROMETHEUS_MULTIPROC_DIR to store values in
        files; `multiprocess_dir` (the same variable, from Settings) makes /metrics
        aggregate every worker's files.
        """
        self._multiprocess = bool(multiprocess_dir)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests_total",
            "Requests answered",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ratelimit_rejections = Counter(
            "gateway_ratelimit_rejections_total",
            "Requests refused with 429 by a rate limit",
            ["route", "policy"],
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds",
            "Time an upstream took to answer (or fail), retries included",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # NOTE: each worker has its own breaker. `livesum` makes the value the number of
        # live workers whose breaker for that upstream is in that state, and drops a dead
        # worker's share (gunicorn's child_exit marks it dead).
        self.breaker_state = Gauge(
            "gateway_circuit_breaker_state",
            "Workers whose circuit breaker for the upstream is in this state",
            ["upstream", "state"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.breaker_opened = Counter(
            "gateway_circuit_breaker_opened_total",
            "Times a circuit breaker opened (a half-open trial failing included)",
            ["upstream"],
            registry=self.registry,
        )
        self.store_failures = Counter(
            "gateway_ratelimit_store_failures_total",
            "Requests whose rate-limit/revocation check could not reach Redis",
            ["outcome"],
            registry=self.registry,
        )
        self.revocation_feed_failures = Counter(
            "gateway_revocation_feed_failures_total",
            "Polls of the auth service's revoked-session feed that failed",
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._upstream_children: dict[str, Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route),
            )
            if len(self._request_children) < _CHILD_CACHE_LIMIT:
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_upstream(self, upstream: str, seconds: float) -> None:
        """Record how long one upstream exchange took (retries included)."""
        child = self._upstream_children.get(upstream)
        if child is None:
            child = self.upstream_duration.labels(upstream)
            if len(self._upstream_children) < _CHILD_CACHE_LIMIT:
                self._upstream_children[upstream] = child
        child.observe(seconds)

    def breaker_changed(self, upstream: str, state: str) -> None:
        """Record that this worker's breaker for `upstream` is now in `state`."""
        for name in STATES:
            self.breaker_state.labels(upstream, name).set(1 if name == state else 0)
        if state == OPEN:
            self.breaker_opened.labels(upstream).inc()

    def render(self) -> bytes:
        """The exposition text: every worker's values when in multiprocess mode."""
        if self._multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsResource:
    """GET /metrics."""

    def __init__(self, metrics: Metrics) -> None:
        """Serve these metrics."""
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Prometheus text format."""
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.render()
