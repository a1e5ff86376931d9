"""OpenTelemetry for the gateway: a CLIENT span per upstream call.

The provider and the per-request SERVER span are shared with the auth service
(authgate_common.tracing). The requests/urllib3 instrumentors would patch every pool in
the process (and would not see the proxy's own upstream client anyway), so the CLIENT span
is ours too, and the `traceparent` sent upstream is injected explicitly from it: the
upstream's SERVER span is that span's child. With tracing off nothing here is installed
and the gateway forwards `traceparent` itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import falcon
from opentelemetry import trace
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL

from authgate_common.tracing import PROPAGATOR, known_method, span_name

INSTRUMENTATION_NAME = "gateway_service"
UPSTREAM_ATTRIBUTE = "authgate.upstream"


class UpstreamTracing:
    """CLIENT spans around upstream calls; the `traceparent` sent is the CLIENT span's."""

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        """Get our tracer from the provider we were given (never the global one)."""
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)

    @contextmanager
    def call(
        self, method: str, upstream_url: str, target: str, route: str, headers: dict[str, str]
    ) -> Iterator[trace.Span]:
        """Span one upstream exchange and put its context into `headers`.

        Yields the span so the caller can record the upstream's status; a falcon.HTTPError
        raised inside (the proxy's 502/504 mapping) marks the span as failed.
        """
        host, port, origin = _origin(upstream_url)
        attributes: dict[str, Any] = {
            HTTP_REQUEST_METHOD: known_method(method),
            SERVER_ADDRESS: host,
            SERVER_PORT: port,
            # SECURITY: never the query string; it can carry tokens.
            URL_FULL: origin + target.split("?", 1)[0],
            UPSTREAM_ATTRIBUTE: route,
        }
        with self._tracer.start_as_current_span(
            span_name(method, route),
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            PROPAGATOR.inject(headers)
            try:
                yield span
            except falcon.HTTPError as ex:
                # A stable code ("upstream_timeout"...), never the exception's text.
                span.set_attribute(ERROR_TYPE, str(ex.code or ex.status_code))
                span.set_status(trace.StatusCode.ERROR)
                raise

    @staticmethod
    def record_status(span: trace.Span, status: int) -> None:
        """Record the upstream's status; a client span is an error for any 4xx/5xx."""
        span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
        if status >= 400:
            span.set_attribute(ERROR_TYPE, str(status))
            span.set_status(trace.StatusCode.ERROR)


@functools.lru_cache(maxsize=64)
def _origin(upstream_url: str) -> tuple[str, int, str]:
    """Host, port and `scheme://netloc` of an upstream: fixed, so split once."""
    parts = urlsplit(upstream_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port, f"{parts.scheme}://{parts.netloc}"
