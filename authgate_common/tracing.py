"""OpenTelemetry for both services: the exporting provider and a SERVER span per request.

NOTE: every piece takes its tracer provider explicitly and patches nothing globally.
opentelemetry-instrumentation-falcon works with Falcon 4.4, but only by replacing
`falcon.App` for the whole process, once: every later app (the other service's in a test
run, an app built with tracing off) would be traced too, by the first provider. So the
Falcon span is ours (`RequestTracing`).
"""

from __future__ import annotations

from typing import Any

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
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

REQUEST_ID_ATTRIBUTE = "authgate.request_id"

# W3C Trace Context only, in and out; no global propagator is consulted or set.
PROPAGATOR = TraceContextTextMapPropagator()

# SECURITY: the method is client input. Spans and metric labels carry only these; anything
# else is "_OTHER" (OpenTelemetry's name), so a client cannot mint names or series.
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

    Listed first, so its span is current while every other middleware, the responder and
    the access log run, and it ends last.
    """

    def __init__(self, tracer_provider: trace.TracerProvider, instrumentation_name: str) -> None:
        """Get the service's tracer from the provider given (never the global one)."""
        self._tracer = tracer_provider.get_tracer(instrumentation_name)

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
        """Name the span by its route, record the status, end it."""
        span = req.context.span
        if span is None:
            return
        try:
            # The gateway's proxy sets the matched prefix; every other route has a template.
            route = req.context.route or req.uri_template
            span.update_name(span_name(req.method, route))
            if route and route.startswith("/"):
                span.set_attribute(HTTP_ROUTE, route)
            status = resp.status_code
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            request_id = req.context.request_id
            if request_id:
                span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            # NOTE: a server span is an error for 5xx only; a 4xx is the client's doing.
            if status >= 500:
                span.set_attribute(ERROR_TYPE, str(status))
                span.set_status(trace.StatusCode.ERROR)
            span.end()
        finally:
            context.detach(req.context.trace_context_token)
