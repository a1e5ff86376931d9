"""OpenTelemetry tracing: a SERVER span per request, a CLIENT span per upstream call.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (or a test hands `create_app` a provider);
when off nothing here is installed and the gateway forwards `traceparent` itself.

NOTE: every piece takes its tracer provider explicitly and patches nothing globally, as
the auth service does: opentelemetry-instrumentation-falcon replaces `falcon.App` for the
whole process, and the requests/urllib3 instrumentors patch every pool in it (and would
not see the proxy's own upstream client anyway). Our spans
are two small classes, and the `traceparent` sent upstream is injected explicitly from
the CLIENT span, so the upstream's SERVER span is that span's child.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import falcon
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

INSTRUMENTATION_NAME = "gateway_service"
UPSTREAM_ATTRIBUTE = "authgate.upstream"
REQUEST_ID_ATTRIBUTE = "authgate.request_id"

# W3C Trace Context only, in and out; no global propagator is consulted or set.
PROPAGATOR = TraceContextTextMapPropagator()

# Methods a span may be named after; anything else is "_OTHER" (semantic conventions), so
# a client inventing methods cannot mint span names.
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)


def known_method(method: str) -> str:
    """The method, or "_OTHER" for one outside the HTTP registry."""
    return method if method in _KNOWN_METHODS else "_OTHER"


def build_tracer_provider(endpoint: str | None, service_name: str) -> TracerProvider | None:
    """An OTLP/HTTP (protobuf) exporting provider, or None when no endpoint is configured."""
    if not endpoint:
        return None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    # NOTE: OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; the OTLP spec appends
    # the per-signal path. Batching keeps the export off the request's path.
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def span_name(method: str, route: str | None) -> str:
    """`METHOD /route/prefix`, or the method alone when no route matched (bounded names)."""
    method = known_method(method)
    prefix = "HTTP" if method == "_OTHER" else method
    return f"{prefix} {route}" if route and route.startswith("/") else prefix


class RequestTracing:
    """Falcon middleware: a SERVER span per request, continuing an incoming `traceparent`.

    Listed first, so its span is current while every other middleware, the proxy and the
    access log run, and it ends last.
    """

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        """Get our tracer from the provider we were given (never the global one)."""
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Start the span (a child of the caller's, if any) and make it current."""
        carrier = {
            name: value
            for name in ("traceparent", "tracestate")
            if (value := req.get_header(name)) is not None
        }
        method = known_method(req.method)
        attributes: dict[str, Any] = {
            HTTP_REQUEST_METHOD: method,
            URL_SCHEME: req.scheme,
            URL_PATH: req.path,
        }
        if req.remote_addr:
            attributes[CLIENT_ADDRESS] = req.remote_addr
        if req.user_agent:
            attributes[USER_AGENT_ORIGINAL] = req.user_agent[:512]
        span = self._tracer.start_span(
            span_name(method, None),
            context=PROPAGATOR.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
        )
        req.context.span = span
        req.context.trace_context_token = context.attach(trace.set_span_in_context(span))
        span_context = span.get_span_context()
        if span_context.is_valid:
            req.context.trace_id = trace.format_trace_id(span_context.trace_id)
            req.context.span_id = trace.format_span_id(span_context.span_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        """Name the span by its route prefix (or own endpoint), record the status, end it."""
        span: trace.Span | None = getattr(req.context, "span", None)
        if span is None:
            return
        try:
            # The proxy sets the matched prefix; the gateway's own endpoints have templates.
            route = getattr(req.context, "route", None) or req.uri_template
            span.update_name(span_name(req.method, route))
            if route and route.startswith("/"):
                span.set_attribute(HTTP_ROUTE, route)
            status = resp.status_code
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            request_id = getattr(req.context, "request_id", None)
            if request_id:
                span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            # NOTE: a server span is an error for 5xx only; a 4xx is the client's doing.
            if status >= 500:
                span.set_attribute(ERROR_TYPE, str(status))
                span.set_status(trace.StatusCode.ERROR)
            span.end()
        finally:
            context.detach(req.context.trace_context_token)


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
        parts = urlsplit(upstream_url)
        attributes: dict[str, Any] = {
            HTTP_REQUEST_METHOD: known_method(method),
            SERVER_ADDRESS: parts.hostname or "",
            SERVER_PORT: parts.port or (443 if parts.scheme == "https" else 80),
            # SECURITY: never the query string; it can carry tokens.
            URL_FULL: f"{parts.scheme}://{parts.netloc}{target.split('?', 1)[0]}",
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
