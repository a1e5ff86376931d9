"""The gateway's access log: the fields operators need, never a token or a password."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest
import requests
from falcon import testing
from gateway_support import Echo, Minter, gateway_env, launch_gateway
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway_service.app import create_app
from gateway_service.logs import ConsoleFormatter, JsonFormatter
from gateway_service.settings import Settings, SettingsError

PASSWORD = "hunter2-Very-Secret-Passw0rd"
QUERY_SECRET = "reset-token-in-query-7f3a"


@pytest.fixture
def capture() -> Iterator[Callable[[logging.Formatter], io.StringIO]]:
    """Attach a formatter of ours to the gateway's loggers at DEBUG; detach afterwards."""
    logger = logging.getLogger("gateway_service")
    level = logger.level
    handlers: list[logging.Handler] = []

    def attach(formatter: logging.Formatter) -> io.StringIO:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        handlers.append(handler)
        logger.setLevel(logging.DEBUG)
        return stream

    yield attach
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


def traced_client(settings: Settings) -> tuple[testing.TestClient, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return testing.TestClient(create_app(settings, tracer_provider=provider)), exporter


def access_lines(stream: io.StringIO) -> list[dict]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == "gateway_service.access"]


def test_json_access_line_has_every_field_and_no_secret(
    settings_for: Callable[..., Settings],
    minter: Minter,
    capture: Callable[[logging.Formatter], io.StringIO],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, exporter = traced_client(settings_for())
    token = minter.token(sub="user-42")
    json_out = capture(JsonFormatter())
    console_out = capture(ConsoleFormatter())
    with caplog.at_level(logging.DEBUG):  # every logger, the libraries' included
        result = client.simulate_post(
            f"/api/v1/orders/9?token={QUERY_SECRET}",
            json={"email": "a@example.com", "password": PASSWORD},
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "log-req-1"},
            remote_addr="203.0.113.9",
        )
    assert result.status_code == 200
    assert PASSWORD in base64.b64decode(result.json["body_b64"]).decode(), "upstream saw no body"

    [line] = access_lines(json_out)
    [server] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert line["level"] == "info"
    assert line["request_id"] == "log-req-1"
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert line["span_id"] == format(server.context.span_id, "016x")
    assert (line["method"], line["route"], line["status"]) == ("POST", "/api/v1/orders", 200)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["user_id"] == "user-42"
    assert line["client_ip"] == "203.0.113.9"

    ours = json_out.getvalue() + console_out.getvalue()
    everything = ours + caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    for secret in (token, token.split(".")[2], PASSWORD):
        assert secret not in everything
    # NOTE: only our own lines are checked: a library's DEBUG line is not ours to shape.
    assert QUERY_SECRET not in ours


def test_console_line_is_readable(
    settings_for: Callable[..., Settings],
    minter: Minter,
    capture: Callable[[logging.Formatter], io.StringIO],
) -> None:
    client, _ = traced_client(settings_for())
    out = capture(ConsoleFormatter())
    client.simulate_get(
        "/api/v1/orders/1",
        headers={"Authorization": f"Bearer {minter.token(sub='u-7')}", "X-Request-ID": "c-1"},
    )
    client.simulate_get("/healthz", headers={"X-Request-ID": "c-2"})
    orders, health = out.getvalue().splitlines()
    assert re.fullmatch(
        r"\S+ \S+ INFO gateway_service\.access GET /api/v1/orders 200 \d+\.\dms "
        r"rid=c-1 user=u-7 ip=127\.0\.0\.1 trace=[0-9a-f]{32}",
        orders,
    ), orders
    # The gateway's own endpoints are logged by their template, with the client's address.
    assert " GET /healthz 200 " in health and "rid=c-2 user=- ip=127.0.0.1" in health


def test_refused_requests_are_logged_too(
    settings_for: Callable[..., Settings], capture: Callable[[logging.Formatter], io.StringIO]
) -> None:
    client = testing.TestClient(create_app(settings_for()))
    out = capture(JsonFormatter())
    bogus = "Bearer not.a.jwt-but-secret"
    result = client.simulate_get("/api/v1/orders/1", headers={"Authorization": bogus})
    assert result.status_code == 401
    [line] = access_lines(out)
    assert (line["route"], line["status"], line["user_id"]) == ("/api/v1/orders", 401, None)
    # Tracing off: the trace id is the one the gateway made (and would have sent upstream).
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
    assert line["span_id"] is None
    assert "secret" not in out.getvalue()


def test_other_lines_join_the_current_trace(
    settings_for: Callable[..., Settings], capture: Callable[[logging.Formatter], io.StringIO]
) -> None:
    client, exporter = traced_client(settings_for())

    class Broken:
        def on_get(self, req: object, resp: object) -> None:
            raise RuntimeError("boom")

    client.app.add_route("/broken", Broken())
    out = capture(JsonFormatter())
    logging.getLogger("gateway_service.proxy").info("outside any request")
    assert client.simulate_get("/broken").status_code == 500
    outside, error, access = (json.loads(line) for line in out.getvalue().splitlines())
    assert "trace_id" not in outside
    [server] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    trace_id = format(server.context.trace_id, "032x")
    # The unhandled-error line (written by the error handler) carries the request's trace.
    assert (error["level"], error["trace_id"]) == ("error", trace_id)
    assert "RuntimeError" in error["exception"]
    assert (access["logger"], access["trace_id"], access["status"]) == (
        "gateway_service.access",
        trace_id,
        500,
    )


def test_access_log_can_be_turned_off(
    settings_for: Callable[..., Settings], capture: Callable[[logging.Formatter], io.StringIO]
) -> None:
    client = testing.TestClient(create_app(settings_for(GATEWAY_ACCESS_LOG="false")))
    out = capture(JsonFormatter())
    assert client.simulate_get("/healthz").status_code == 200
    assert access_lines(out) == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_settings_refuse_bad_observability_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_service_name_is_the_gateways_own() -> None:
    assert Settings.from_env({}).otel_service_name == "authgate-gateway"
    assert Settings.from_env({}).otel_exporter_otlp_endpoint is None
    assert Settings.from_env({"OTEL_SERVICE_NAME": "gw-eu"}).otel_service_name == "gw-eu"
    shared_env = {"OTEL_SERVICE_NAME": "authgate-auth", "GATEWAY_OTEL_SERVICE_NAME": "gw"}
    assert Settings.from_env(shared_env).otel_service_name == "gw"
    assert Settings.from_env({"LOG_FORMAT": "Console"}).log_format == "console"


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["json", "console"])
def test_gunicorn_workers_write_the_configured_format(echo: Echo, log_format: str) -> None:
    gateway = launch_gateway(gateway_env(echo, LOG_FORMAT=log_format), workers=1)
    try:
        result = requests.get(
            f"{gateway.url}/api/v1/catalog/x", headers={"X-Request-ID": "gunicorn-1"}, timeout=5
        )
        assert result.status_code == 200
    finally:
        output = gateway.stop()
    lines = [line for line in output.splitlines() if "gunicorn-1" in line]
    assert len(lines) == 1, output[-3000:]
    if log_format == "json":
        line = json.loads(lines[0])
        assert line["logger"] == "gateway_service.access"
        assert (line["route"], line["status"], line["client_ip"]) == (
            "/api/v1/catalog",
            200,
            "127.0.0.1",
        )
    else:
        assert re.search(
            r" INFO gateway_service\.access GET /api/v1/catalog 200 \S+ms rid=gunicorn-1 ", lines[0]
        ), lines[0]
