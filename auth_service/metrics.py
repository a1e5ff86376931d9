"""Prometheus metrics of the auth service, correct under several gunicorn workers.

Each app owns its metrics in a registry of its own (tests build many apps in one
process). Under gunicorn, prometheus_client's multiprocess mode is on whenever
PROMETHEUS_MULTIPROC_DIR is set: every worker writes its values to files in that
directory, and `/metrics` sums all workers' files into a fresh registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from authgate_common.tracing import known_method

# NOTE: the format the spec declares and generate_latest() writes by default;
# prometheus_client 0.26's CONTENT_TYPE_LATEST says version=1.0.0 instead.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED_ROUTE = "(unmatched)"
LOGIN_OUTCOMES = (
    "success",
    "bad_credentials",
    "inactive",
    "unverified",
    "throttled",
    "mfa_required",
    "bad_second_factor",
)
REFRESH_OUTCOMES = ("rotated", "race", "reuse", "invalid")
MAIL_OUTCOMES = ("sent", "retry", "failed")


class Backlog(Protocol):
    """Work waiting in the database (auth_service.services.outbox.Backlog)."""

    @property
    def mail(self) -> int:
        """Mails not yet sent nor given up on."""

    @property
    def reset_requests(self) -> int:
        """Reset requests not yet resolved."""


class BacklogCollector(Collector):
    """Gauges read from the database at scrape time: one truth for every worker.

    NOTE: a gauge kept in process memory would differ per worker (and multiprocess mode
    would sum the copies); the count of rows is the same whichever worker is asked.
    """

    def __init__(self, read: Callable[[], Backlog | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """Yield the backlog gauges; none when the database does not answer."""
        backlog = self._read()
        if backlog is None:
            return
        yield GaugeMetricFamily(
            "authgate_mail_outbox_backlog",
            "Mails in the outbox not yet sent nor given up on.",
            value=backlog.mail,
        )
        yield GaugeMetricFamily(
            "authgate_password_reset_requests_backlog",
            "Password-reset requests the mail sender has not resolved yet.",
            value=backlog.reset_requests,
        )


class Metrics:
    """The counters and histograms the auth service exports at `/metrics`."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "authgate_requests",
            "Requests handled, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "authgate_request_duration_seconds",
            "Time from the request's arrival in the app to its response, by route template.",
            ["route", "method"],
            registry=registry,
        )
        self.logins = Counter(
            "authgate_logins", "Login attempts by outcome.", ["outcome"], registry=registry
        )
        self.refreshes = Counter(
            "authgate_refreshes",
            "Refresh-token presentations by outcome: rotated (200), race (409 in the grace "
            "window), reuse (a rotated token replayed: session revoked), invalid (other 401s).",
            ["outcome"],
            registry=registry,
        )
        self.contract_breaches = Counter(
            "authgate_response_contract_breaches",
            "Responses that broke the OpenAPI contract, by operationId.",
            ["operation"],
            registry=registry,
        )
        self.mail_deliveries = Counter(
            "authgate_mail_deliveries",
            "Outbox delivery attempts by outcome: sent, retry (failed, tried again later), "
            "failed (gave up after MAIL_MAX_ATTEMPTS).",
            ["outcome"],
            registry=registry,
        )
        self._backlog: BacklogCollector | None = None
        # NOTE: every outcome is exported from the start (at 0), so rate() and alerts see
        # a series before the first event rather than "no data".
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)
        for outcome in REFRESH_OUTCOMES:
            self.refreshes.labels(outcome)
        for outcome in MAIL_OUTCOMES:
            self.mail_deliveries.labels(outcome)
        if multiprocess_dir is None:
            # Process metrics only make sense for one process; multiprocess mode has none.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its duration under its route template."""
        method = known_method(method)
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)

    def login(self, outcome: str) -> None:
        """Count one login attempt (one of LOGIN_OUTCOMES)."""
        self.logins.labels(outcome).inc()

    def refresh(self, outcome: str) -> None:
        """Count one refresh attempt (one of REFRESH_OUTCOMES)."""
        self.refreshes.labels(outcome).inc()

    def mail_delivery(self, outcome: str) -> None:
        """Count one outbox delivery attempt (one of MAIL_OUTCOMES)."""
        self.mail_deliveries.labels(outcome).inc()

    def watch_backlog(self, read: Callable[[], Backlog | None]) -> None:
        """Export the database backlog `read` returns at every scrape."""
        self._backlog = BacklogCollector(read)
        if self._multiprocess_dir is None:
            self.registry.register(self._backlog)

    def contract_breach(self, operation_id: str) -> None:
        """Count one response that broke the spec."""
        self.contract_breaches.labels(operation_id).inc()

    def exposition(self) -> bytes:
        """The Prometheus text for `/metrics`: every worker's values when multiprocess."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        # NOTE: a fresh registry per scrape, as prometheus_client documents: the files of
        # all workers (dead ones' counters included) are read and summed each time.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        if self._backlog is not None:
            registry.register(self._backlog)
        return generate_latest(registry)
