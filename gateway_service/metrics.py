"""Prometheus metrics, labelled by route prefix or template (never raw paths or hosts)."""

from __future__ import annotations

import falcon
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)


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
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.store_failures = Counter(
            "gateway_ratelimit_store_failures_total",
            "Requests whose rate-limit/revocation check could not reach Redis",
            ["outcome"],
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route).observe(seconds)

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
