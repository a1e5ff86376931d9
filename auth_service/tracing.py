"""OpenTelemetry tracing: one server span per request, SQL spans under it, OTLP export.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (or a test hands `create_app` a provider);
when off nothing here is installed, so requests pay nothing for it.

NOTE: every piece takes its tracer provider explicitly and patches nothing globally.
opentelemetry-instrumentation-falcon works with Falcon 4.4, but only by replacing
`falcon.App` for the whole process, once: every later app (the gateway's in a test
run, an app built with tracing off) would be traced too, by the first provider. So the
Falcon span is ours (`RequestTracing`), and SQLAlchemy's instrumentation is attached to
our engine alone (its `EngineTracer`) rather than through its global instrumentor.
"""

from __future__ import annotations

from typing import Any

import falcon
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
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
from sqlalchemy import Engine

from auth_service.metrics import known_method

INSTRUMENTATION_NAME = "auth_service"

# W3C Trace Context only: the gateway sends `traceparent`; nothing else is believed.
_PROPAGATOR = TraceContextTextMapPropagator()


def build_tracer_provider(endpoint: str | None, service_name: str) -> TracerProvider | None:
    """An OTLP/HTTP (protobuf) exporting provider, or None when no endpoint is configured."""
    if not endpoint:
        return None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    # NOTE: OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; the OTLP spec
    # appends the per-signal path. Batching keeps the export off the request's path.
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def trace_engine(engine: Engine, tracer_provider: trace.TracerProvider) -> None:
    """Give every statement on this engine a client span under the current request's span."""
    tracer = tracer_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    # NOTE: we export metrics with Prometheus, so the instrumentation's pool gauge is a no-op.
    pool_usage = (
        NoOpMeterProvider()
        .get_meter(INSTRUMENTATION_NAME)
        .create_up_down_counter("db.client.connections.usage")
    )
    EngineTracer(tracer, engine, pool_usage)


class RequestTracing:
    """Falcon middleware: a SERVER span per request, continuing an incoming `traceparent`.

    Listed first, so its span is current while every other middleware, the responder and
    the access log run, and it ends last.
    """

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
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
            "HTTP" if method == "_OTHER" else method,
            context=_PROPAGATOR.extract(carrier),
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
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Name the span by its route template, record the status, end it."""
        span: trace.Span | None = getattr(req.context, "span", None)
        if span is None:
            return
        try:
            status = resp.status_code
            if req.uri_template:
                span.update_name(f"{known_method(req.method)} {req.uri_template}")
                span.set_attribute(HTTP_ROUTE, req.uri_template)
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
            request_id = getattr(req.context, "request_id", None)
            if request_id:
                span.set_attribute("authgate.request_id", request_id)
            # NOTE: server spans are errors for 5xx only; a 4xx is the client's doing.
            if status >= 500:
                span.set_attribute(ERROR_TYPE, str(status))
                span.set_status(trace.StatusCode.ERROR)
            span.end()
        finally:
            context.detach(req.context.trace_context_token)
