"""One trace across both services: gateway SERVER -> gateway CLIENT -> auth SERVER -> SQL.

The auth service runs under real gunicorn and exports over OTLP/HTTP to a tiny receiver
started here; the gateway runs in-process with an in-memory exporter (and, once, under
gunicorn exporting to the same receiver, the way it is deployed).
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
from falcon import testing
from gateway_support import (
    free_port,
    launch_gateway,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from process_support import running_auth_service

from authgate_common.problem_types import ProblemType
from gateway_service.app import create_app
from gateway_service.settings import Settings

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
AUTH_SERVICE_NAME = "authgate-auth-under-test"
GATEWAY_NAME = "authgate-gateway-under-test"


# --------------------------------------------------------------------------- receiver


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the auth service (or a gunicorn gateway) exported it."""

    service: str
    span: PbSpan

    @property
    def trace_id(self) -> str:
        """Hex trace id."""
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        """Hex span id."""
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        """Hex parent span id ('' for a root)."""
        return self.span.parent_span_id.hex()


class Receiver:
    """The spans a local OTLP/HTTP endpoint has been sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bodies: list[bytes] = []
        self.paths: list[str] = []

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, decoded from the protobuf exports."""
        found = []
        for body in list(self.bodies):
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                attributes = {
                    kv.key: kv.value.string_value for kv in resource_spans.resource.attributes
                }
                for scope in resource_spans.scope_spans:
                    found += [ReceivedSpan(attributes["service.name"], s) for s in scope.spans]
        return found

    def wait_for(
        self, ready: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Poll until `ready(spans)` holds; return the spans either way (asserts then say why)."""
        deadline = time.monotonic() + timeout
        spans = self.spans()
        while not ready(spans) and time.monotonic() < deadline:
            time.sleep(0.05)
            spans = self.spans()
        return spans


class _OtlpHandler(http.server.BaseHTTPRequestHandler):
    receiver: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.receiver.paths.append(self.path)
        if self.path == "/v1/traces":
            self.receiver.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A minimal OTLP/HTTP receiver on a free port (threaded: both services export to it)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtlpHandler)
    recv = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = type("Handler", (_OtlpHandler,), {"receiver": recv})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield recv
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- services


@pytest.fixture(scope="module")
def auth_url(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[str]:
    """The auth service on migrated SQLite under gunicorn, exporting traces to `receiver`."""
    var = tmp_path_factory.mktemp("auth-traced")
    with running_auth_service(
        var,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME=AUTH_SERVICE_NAME,
        # OpenTelemetry's own knob: export every 50 ms instead of every 5 s.
        OTEL_BSP_SCHEDULE_DELAY="50",
    ) as url:
        yield url


def gateway_settings(auth_url: str) -> Settings:
    """The gateway's default routes in front of the auth service; limits out of the way."""
    return Settings.from_env(
        {
            "AUTH_SERVICE_URL": auth_url,
            "RATE_LIMIT_DEFAULT": "100000/minute",
            "RATE_LIMIT_AUTH": "100000/minute",
        }
    )


@dataclass
class Traced:
    """An in-process gateway with tracing on, and where its spans go."""

    client: testing.TestClient
    exporter: InMemorySpanExporter


@pytest.fixture
def traced(auth_url: str) -> Traced:
    """The gateway in-process with its own provider and an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(gateway_settings(auth_url), tracer_provider=provider)
    return Traced(testing.TestClient(app), exporter)


@pytest.fixture(scope="module")
def user(auth_url: str) -> dict[str, str]:
    """A registered user and a fresh access token, made directly on the auth service."""
    email = f"trace-{uuid.uuid4().hex[:12]}@example.com"
    created = requests.post(
        f"{auth_url}/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": "Trace"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    login = requests.post(
        f"{auth_url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert login.status_code == 200, login.text
    return {"email": email, "id": created.json()["id"], "token": login.json()["access_token"]}


def new_trace_id() -> str:
    """A trace id of this test's own: every test's spans land in the one receiver."""
    return uuid.uuid4().hex


def hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def hex_span(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def of_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in spans if span.kind == kind]


def auth_request_spans(
    receiver: Receiver, trace_id: str, server_name: str
) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The auth service's SERVER span of `trace_id` and its SQL children, once exported."""

    def complete(spans: list[ReceivedSpan]) -> bool:
        servers = [s for s in spans if s.trace_id == trace_id and s.span.name == server_name]
        return bool(servers) and any(s.parent_id == servers[0].span_id for s in spans)

    spans = [s for s in receiver.wait_for(complete) if s.trace_id == trace_id]
    servers = [s for s in spans if s.span.kind == PbSpan.SPAN_KIND_SERVER]
    assert [s.span.name for s in servers] == [server_name], [s.span.name for s in spans]
    children = [s for s in spans if s.parent_id == servers[0].span_id]
    return servers[0], children


# --------------------------------------------------------------------------- tests


def test_one_trace_covers_gateway_auth_service_and_sql(
    traced: Traced, receiver: Receiver, user: dict[str, str], auth_url: str
) -> None:
    result = traced.client.simulate_get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {user['token']}"}
    )
    assert result.status_code == 200, result.text
    assert result.json["email"] == user["email"]

    spans = traced.exporter.get_finished_spans()
    [server] = of_kind(spans, SpanKind.SERVER)
    [client] = of_kind(spans, SpanKind.CLIENT)
    assert server.name == "GET /api/v1/auth"
    assert server.parent is None, "no traceparent came in: the gateway starts the trace"
    assert dict(server.attributes or {})["http.route"] == "/api/v1/auth"
    assert dict(server.attributes or {})["http.response.status_code"] == 200
    assert dict(server.attributes or {})["authgate.request_id"] == result.headers["X-Request-ID"]
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert hex_trace(client) == hex_trace(server)
    client_attributes = dict(client.attributes or {})
    assert client_attributes["http.request.method"] == "GET"
    assert client_attributes["http.response.status_code"] == 200
    assert client_attributes["url.full"] == f"{auth_url}/api/v1/auth/me"
    assert client.status.status_code == StatusCode.UNSET

    trace_id = hex_trace(server)
    auth_server, children = auth_request_spans(receiver, trace_id, "GET /api/v1/auth/me")
    # The upstream's SERVER span is the child of the gateway's CLIENT span: the injected
    # traceparent carried the CLIENT span's id, not the SERVER span's or a made-up one.
    assert auth_server.parent_id == hex_span(client)
    assert auth_server.service == AUTH_SERVICE_NAME
    auth_attributes = {kv.key: kv.value for kv in auth_server.span.attributes}
    # The same request id travels with the trace.
    assert auth_attributes["authgate.request_id"].string_value == result.headers["X-Request-ID"]
    sql = [s for s in children if s.span.kind == PbSpan.SPAN_KIND_CLIENT]
    assert sql, "the auth service's session lookup made no SQL span under its server span"
    assert any(s.span.name.startswith("SELECT") for s in sql), [s.span.name for s in sql]


def test_a_client_traceparent_is_continued_through_both_services(
    traced: Traced, receiver: Receiver, user: dict[str, str]
) -> None:
    trace_id = new_trace_id()
    result = traced.client.simulate_post(
        "/api/v1/auth/login",
        json={"email": user["email"], "password": PASSWORD},
        headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN_ID}-01", "tracestate": "vendor=x"},
    )
    assert result.status_code == 200, result.text

    spans = traced.exporter.get_finished_spans()
    assert {hex_trace(span) for span in spans} == {trace_id}
    [server] = of_kind(spans, SpanKind.SERVER)
    [client] = of_kind(spans, SpanKind.CLIENT)
    assert server.name == "POST /api/v1/auth"
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CLIENT_SPAN_ID
    # tracestate travels with the context (vendors' data, passed on untouched).
    assert client.context.trace_state.get("vendor") == "x"

    auth_server, children = auth_request_spans(receiver, trace_id, "POST /api/v1/auth/login")
    assert auth_server.parent_id == hex_span(client)
    names = [s.span.name for s in children]
    assert any(name.startswith("INSERT") for name in names), names  # the new session row

    # SECURITY: neither the password nor the issued tokens end up in any span.
    secrets = [PASSWORD, result.json["access_token"], result.json["refresh_token"]]
    for span in spans:
        recorded = span.to_json()
        assert not [s for s in secrets if s in recorded], span.name
    for received in receiver.spans():
        recorded = str(received.span)
        assert not [s for s in secrets if s in recorded], received.span.name


def test_upstream_failure_marks_the_client_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings.from_env(
        {
            "AUTH_SERVICE_URL": dead,
            "GATEWAY_CONNECT_TIMEOUT": "0.5",
            "GATEWAY_UPSTREAM_RETRIES": "0",
            "GATEWAY_JWKS_URL": dead + "/.well-known/jwks.json",
        }
    )
    client = testing.TestClient(create_app(settings, tracer_provider=provider))
    result = client.simulate_post("/api/v1/auth/login", json={"email": "a@b.co", "password": "x"})
    assert result.status_code == 502
    spans = exporter.get_finished_spans()
    [server] = of_kind(spans, SpanKind.SERVER)
    [upstream] = of_kind(spans, SpanKind.CLIENT)
    assert upstream.status.status_code == StatusCode.ERROR
    # The span names the failure by its problem type's slug, as the client's answer does.
    assert dict(upstream.attributes or {})["error.type"] == ProblemType.UPSTREAM_UNREACHABLE.slug
    assert server.status.status_code == StatusCode.ERROR
    assert dict(server.attributes or {})["http.response.status_code"] == 502


# NOTE: falcon.testing's WSGI validator warns about the deliberately unknown method.
@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")
def test_own_endpoints_and_refusals_get_bounded_span_names(auth_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = testing.TestClient(create_app(gateway_settings(auth_url), tracer_provider=provider))
    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/api/v1/users/123").status_code == 401  # refused before upstream
    assert client.simulate_get(f"/nowhere/{uuid.uuid4().hex}").status_code == 404
    assert client.simulate_request("BREW", "/healthz").status_code == 400  # Falcon refuses it
    names = [span.name for span in exporter.get_finished_spans()]
    # Refused requests never reach an upstream, so there is no CLIENT span for them.
    assert names == ["GET /healthz", "GET /api/v1/users", "GET", "HTTP /healthz"]


def test_tracing_off_forwards_a_traceparent_that_joins_the_log(
    auth_url: str, receiver: Receiver, user: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    client = testing.TestClient(create_app(gateway_settings(auth_url)))
    headers = {"Authorization": f"Bearer {user['token']}"}
    trace_id = new_trace_id()
    with caplog.at_level(logging.INFO, logger="gateway_service.access"):
        assert client.simulate_get("/api/v1/auth/me", headers=headers).status_code == 200
        continued = client.simulate_get(
            "/api/v1/auth/me",
            headers={**headers, "traceparent": f"00-{trace_id}-{CLIENT_SPAN_ID}-01"},
        )
        assert continued.status_code == 200
    made, kept = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"
    ]
    # Without a client traceparent the gateway makes a valid one, and logs its trace id.
    assert re.fullmatch(r"[0-9a-f]{32}", made["trace_id"]) and made["trace_id"] != "0" * 32
    assert made["span_id"] is None  # no span of the gateway's own exists
    made_server, _ = auth_request_spans(receiver, made["trace_id"], "GET /api/v1/auth/me")
    assert made_server.parent_id and made_server.parent_id != "0" * 16
    # A client's traceparent goes upstream as it came (today's behaviour, no span of ours).
    assert kept["trace_id"] == trace_id
    kept_server, _ = auth_request_spans(receiver, trace_id, "GET /api/v1/auth/me")
    assert kept_server.parent_id == CLIENT_SPAN_ID


def test_gateway_under_gunicorn_exports_the_same_trace(
    auth_url: str, receiver: Receiver, user: dict[str, str]
) -> None:
    trace_id = new_trace_id()
    gateway = launch_gateway(
        {
            "AUTH_SERVICE_URL": auth_url,
            "RATE_LIMIT_DEFAULT": "100000/minute",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            # Set for the auth service in a shared .env: the gateway must not take it.
            "OTEL_SERVICE_NAME": "authgate-auth",
            "GATEWAY_OTEL_SERVICE_NAME": GATEWAY_NAME,
        },
        workers=1,
    )
    try:
        result = requests.get(
            f"{gateway.url}/api/v1/auth/me",
            headers={
                "Authorization": f"Bearer {user['token']}",
                "traceparent": f"00-{trace_id}-{CLIENT_SPAN_ID}-01",
            },
            timeout=10,
        )
        assert result.status_code == 200, result.text

        def complete(spans: list[ReceivedSpan]) -> bool:
            # NOTE: wait for each span the asserts need, not for a count or for both
            # services: the gateway's client span ends (and may be exported) before its
            # server span, and the auth service's SQL spans before its server span.
            ours = [s for s in spans if s.trace_id == trace_id]
            gateway_kinds = {s.span.kind for s in ours if s.service == GATEWAY_NAME}
            auth_servers = [
                s.span_id
                for s in ours
                if s.service == AUTH_SERVICE_NAME and s.span.kind == PbSpan.SPAN_KIND_SERVER
            ]
            return (
                {PbSpan.SPAN_KIND_SERVER, PbSpan.SPAN_KIND_CLIENT} <= gateway_kinds
                and bool(auth_servers)
                and any(s.parent_id in auth_servers for s in ours)
            )

        spans = [s for s in receiver.wait_for(complete, timeout=30) if s.trace_id == trace_id]
    finally:
        gateway.stop()
    gateway_spans = {s.span.kind: s for s in spans if s.service == GATEWAY_NAME}
    assert set(gateway_spans) == {PbSpan.SPAN_KIND_SERVER, PbSpan.SPAN_KIND_CLIENT}, spans
    server = gateway_spans[PbSpan.SPAN_KIND_SERVER]
    client = gateway_spans[PbSpan.SPAN_KIND_CLIENT]
    assert server.span.name == "GET /api/v1/auth"
    assert server.parent_id == CLIENT_SPAN_ID
    assert client.parent_id == server.span_id
    [auth_server] = [
        s
        for s in spans
        if s.service == AUTH_SERVICE_NAME and s.span.kind == PbSpan.SPAN_KIND_SERVER
    ]
    assert auth_server.parent_id == client.span_id
    assert any(s.parent_id == auth_server.span_id for s in spans), "no SQL span under auth's"
