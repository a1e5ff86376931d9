"""OpenTelemetry: server spans continue an incoming traceparent; SQL spans are their children.

Each test hands create_app its own tracer provider with an in-memory exporter, so no
test depends on OpenTelemetry's process-global provider.
"""

from __future__ import annotations

import gzip
import http.server
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from auth_api import PASSWORD, Api, bearer
from auth_server import running_auth_service
from falcon import testing
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from auth_service.app import create_app
from auth_service.settings import Settings, SettingsError
from auth_service.spec import Contract
from authgate_common.tracing import build_tracer_provider

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(settings: Settings, contract: Contract, exporter: InMemorySpanExporter) -> Api:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, contract=contract, tracer_provider=provider)
    return Api(testing.TestClient(app))


def hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def test_incoming_traceparent_is_continued_with_sql_spans_as_children(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    user = traced.user("trace@example.com")
    exporter.clear()

    result = traced.client.simulate_get(
        "/api/v1/auth/me", headers={**bearer(user["access_token"]), "traceparent": TRACEPARENT}
    )
    assert result.status_code == 200

    [server] = server_spans(exporter)
    assert hex_trace(server) == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_SPAN_ID
    assert server.parent.is_remote
    assert server.name == "GET /api/v1/auth/me"
    attributes = dict(server.attributes or {})
    assert attributes["http.route"] == "/api/v1/auth/me"
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.response.status_code"] == 200
    assert attributes["authgate.request_id"] == result.headers["X-Request-ID"]

    sql = children(exporter, server)
    assert sql, "the session lookup made no SQL span under the request's span"
    assert all(span.kind == SpanKind.CLIENT for span in sql)
    assert all(hex_trace(span) == TRACE_ID for span in sql)
    assert any(span.name.startswith("SELECT") for span in sql), [span.name for span in sql]
    # Every span of the request is in the caller's trace: none started a trace of its own.
    assert {hex_trace(span) for span in exporter.get_finished_spans()} == {TRACE_ID}


def test_login_sql_spans_nest_and_carry_no_secrets(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    traced.register("sql@example.com")
    exporter.clear()
    result = traced.client.simulate_post(
        "/api/v1/auth/login",
        json={"email": "sql@example.com", "password": PASSWORD},
        headers={"traceparent": TRACEPARENT},
    )
    assert result.status_code == 200
    [server] = server_spans(exporter)
    assert server.name == "POST /api/v1/auth/login"
    names = [span.name for span in children(exporter, server)]
    assert any(name.startswith("INSERT") for name in names), names
    assert any(name.startswith("SELECT") for name in names), names

    secrets = [PASSWORD, result.json["access_token"], result.json["refresh_token"]]
    for span in exporter.get_finished_spans():
        recorded = repr(span.to_json())
        assert not [secret for secret in secrets if secret in recorded], span.name


def test_without_traceparent_a_new_trace_starts(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    assert traced.client.simulate_get("/readyz").status_code == 200
    assert traced.client.simulate_get("/readyz").status_code == 200
    first, second = server_spans(exporter)
    assert first.parent is None and second.parent is None
    assert hex_trace(first) != hex_trace(second)
    assert children(exporter, first), "readyz's SELECT 1 should be a child span"


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "zz-not-a-traceparent",
        f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01-extra-junk",
    ],
)
def test_malformed_traceparent_starts_a_fresh_trace(
    traced: Api, exporter: InMemorySpanExporter, traceparent: str
) -> None:
    result = traced.client.simulate_get("/healthz", headers={"traceparent": traceparent})
    assert result.status_code == 200
    [server] = server_spans(exporter)
    assert server.parent is None
    assert hex_trace(server) not in (TRACE_ID, "0" * 32)


def test_server_errors_mark_the_span_and_unmatched_routes_keep_a_bounded_name(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    assert traced.client.simulate_get(f"/nope/{TRACE_ID}").status_code == 404
    assert traced.client.simulate_post("/api/v1/auth/login", json={}).status_code == 422
    unmatched, invalid = server_spans(exporter)
    assert unmatched.name == "GET"
    assert "http.route" not in (unmatched.attributes or {})
    assert invalid.name == "POST /api/v1/auth/login"
    assert invalid.status.status_code == StatusCode.UNSET  # a 4xx is the client's doing


def test_a_database_failure_is_an_error_span(
    settings: Settings, contract: Contract, exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broken = replace(settings, database_url="sqlite:////nonexistent-dir/x.db")
    client = testing.TestClient(create_app(broken, contract=contract, tracer_provider=provider))
    result = client.simulate_post(
        "/api/v1/auth/login", json={"email": "a@b.co", "password": "x" * 8}
    )
    assert result.status_code == 503
    [server] = server_spans(exporter)
    assert server.status.status_code == StatusCode.ERROR
    assert dict(server.attributes or {})["http.response.status_code"] == 503


def test_tracing_off_installs_nothing(
    client: testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The default test settings have no OTLP endpoint and no provider is passed.
    with caplog.at_level(logging.INFO, logger="authgate.access"):
        result = client.simulate_get("/healthz", headers={"traceparent": TRACEPARENT})
    assert result.status_code == 200
    [record] = [r for r in caplog.records if r.name == "authgate.access"]
    assert record.trace_id is None
    assert "traceparent" not in result.headers


# --------------------------------------------------------------------------- OTLP export


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A minimal OTLP/HTTP receiver on a free port: records what it is sent."""
    received: list[tuple[str, str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_spans_are_exported_over_otlp_http_protobuf(
    settings: Settings,
    contract: Contract,
    collector: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    endpoint, received = collector
    provider = build_tracer_provider(endpoint, "authgate-auth-test")
    assert provider is not None
    client = testing.TestClient(create_app(settings, contract=contract, tracer_provider=provider))
    assert client.simulate_get("/readyz", headers={"traceparent": TRACEPARENT}).status_code == 200
    assert provider.force_flush(10_000)
    provider.shutdown()

    assert received, "nothing reached the collector"
    path, content_type, body = received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    export = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = export.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "authgate-auth-test"
    spans = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert {span.trace_id.hex() for span in spans} == {TRACE_ID}
    assert "GET /readyz" in {span.name for span in spans}


@pytest.mark.parametrize("endpoint", ["localhost:4318", "grpc://collector:4317", "ftp://x"])
def test_settings_refuse_an_endpoint_that_is_not_http(endpoint: str) -> None:
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})


def test_settings_read_the_otel_variables() -> None:
    assert Settings.from_env({}).otel_exporter_otlp_endpoint is None
    assert Settings.from_env({}).otel_service_name == "authgate-auth"
    configured = Settings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_SERVICE_NAME": "auth-eu"}
    )
    assert configured.otel_exporter_otlp_endpoint == "http://otel:4318"
    assert configured.otel_service_name == "auth-eu"


def test_no_endpoint_builds_no_provider() -> None:
    assert build_tracer_provider(None, "authgate-auth") is None
    assert build_tracer_provider("", "authgate-auth") is None


def test_settings_endpoint_turns_tracing_on(
    settings: Settings,
    contract: Contract,
    collector: tuple[str, list[tuple[str, str, bytes]]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, received = collector
    # OpenTelemetry's own knob: batch for 50 ms instead of 5 s, so the test is quick.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    on = replace(settings, otel_exporter_otlp_endpoint=endpoint, otel_service_name="from-settings")
    client = testing.TestClient(create_app(on, contract=contract))
    with caplog.at_level(logging.INFO, logger="authgate.access"):
        assert (
            client.simulate_get("/healthz", headers={"traceparent": TRACEPARENT}).status_code == 200
        )
    [record] = [r for r in caplog.records if r.name == "authgate.access"]
    assert record.trace_id == TRACE_ID

    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received, "the provider built from settings exported nothing"
    export = ExportTraceServiceRequest.FromString(received[0][2])
    [resource_spans] = export.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "from-settings"


@pytest.mark.slow
def test_gunicorn_workers_export_the_callers_trace(
    tmp_path: Path, collector: tuple[str, list[tuple[str, str, bytes]]]
) -> None:
    endpoint, received = collector
    with running_auth_service(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="authgate-auth-e2e",
        OTEL_BSP_SCHEDULE_DELAY="50",
    ) as base:
        for n in range(6):
            parent = f"{n + 1:016x}"
            result = requests.get(
                f"{base}/readyz",
                headers={"traceparent": f"00-{TRACE_ID}-{parent}-01", "Connection": "close"},
                timeout=10,
            )
            assert result.status_code == 200
        deadline = time.monotonic() + 10
        spans: list[Any] = []
        while time.monotonic() < deadline:
            exports = [ExportTraceServiceRequest.FromString(body) for _, _, body in received]
            spans = [
                (resource_spans, span)
                for export in exports
                for resource_spans in export.resource_spans
                for scope in resource_spans.scope_spans
                for span in scope.spans
            ]
            # NOTE: the start-up readiness polls are traced too, each in a trace of its own.
            spans = [(res, span) for res, span in spans if span.trace_id.hex() == TRACE_ID]
            if sum(span.name == "GET /readyz" for _, span in spans) == 6:
                break
            time.sleep(0.05)

    servers = [span for _, span in spans if span.name == "GET /readyz"]
    assert len(servers) == 6, [span.name for _, span in spans]
    assert {span.parent_span_id.hex() for span in servers} == {f"{n:016x}" for n in range(1, 7)}
    server_ids = {span.span_id for span in servers}
    assert any(span.parent_span_id in server_ids for _, span in spans if span not in servers)
    names = {
        kv.value.string_value
        for resource_spans, _ in spans
        for kv in resource_spans.resource.attributes
        if kv.key == "service.name"
    }
    assert names == {"authgate-auth-e2e"}
