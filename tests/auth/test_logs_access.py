"""Logs: one access line per request with the agreed fields, and never a secret.

The tests install the service's own handler (`configure_logging`) and read what it
writes to stderr, plus every record pytest captured.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from auth_api import PASSWORD, Api, bearer
from falcon import testing
from opentelemetry.sdk.trace import TracerProvider
from smtp_inbox import (
    RESET_SUBJECT,
    RESET_URL,
    VERIFY_SUBJECT,
    VERIFY_URL,
    Inbox,
    reset_token_from,
    verification_token_from,
)

from auth_service.app import create_app, create_service
from auth_service.logs import configure_logging
from auth_service.settings import Settings
from auth_service.spec import Contract

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def service_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[str], None]]:
    """Install the service's logging (to the captured stderr); put pytest's back after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level

    def install(log_format: str) -> None:
        configure_logging(log_format, logging.DEBUG)
        # Keep pytest's own handlers too, so caplog sees every record as well.
        root.handlers.extend(saved_handlers)

    yield install
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def access_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "authgate.access"]


def test_json_access_line_has_every_field(
    api: Api, service_logging: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    user = api.user("fields@example.com")
    service_logging("json")
    result = api.client.simulate_get(
        f"/api/v1/users/{user['id']}",
        headers={**bearer(user["access_token"]), "X-Request-ID": "req-123"},
    )
    assert result.status_code == 200

    [line] = access_lines(capsys.readouterr().err)
    assert line["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert line["request_id"] == "req-123" == result.headers["X-Request-ID"]
    assert line["trace_id"] is None
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/users/{user_id}"
    assert user["id"] not in line["route"]
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["user_id"] == user["id"]
    assert line["client_ip"] == "127.0.0.1"


def test_unmatched_and_anonymous_requests_are_logged_too(
    client: testing.TestClient,
    service_logging: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    service_logging("json")
    client.simulate_get("/no/such/path")
    client.simulate_post("/api/v1/auth/login", json={"email": "x@example.com", "password": "x"})
    unmatched, login = access_lines(capsys.readouterr().err)
    assert (unmatched["route"], unmatched["status"], unmatched["user_id"]) == (
        "(unmatched)",
        404,
        None,
    )
    assert (login["route"], login["method"], login["status"]) == ("/api/v1/auth/login", "POST", 401)
    assert len(unmatched["request_id"]) == 32 and unmatched["request_id"] != login["request_id"]


def test_client_ip_comes_from_trusted_proxies_only(
    make_client: Callable[..., testing.TestClient],
    service_logging: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    behind = make_client(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    direct = make_client()
    service_logging("json")
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    behind.simulate_get("/healthz", headers=forwarded)
    direct.simulate_get("/healthz", headers=forwarded)
    via_proxy, spoofed = access_lines(capsys.readouterr().err)
    assert via_proxy["client_ip"] == "203.0.113.7"
    assert spoofed["client_ip"] == "127.0.0.1"


def test_access_line_carries_the_trace_id_when_tracing_is_on(
    settings: Settings,
    contract: Contract,
    service_logging: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_app(settings, contract=contract, tracer_provider=TracerProvider())
    client = testing.TestClient(app)
    service_logging("json")
    client.simulate_get("/healthz", headers={"traceparent": TRACEPARENT})
    client.simulate_get("/healthz")
    continued, fresh = access_lines(capsys.readouterr().err)
    assert continued["trace_id"] == TRACE_ID
    assert re.fullmatch(r"[0-9a-f]{16}", continued["span_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", fresh["trace_id"]) and fresh["trace_id"] != TRACE_ID


def test_other_lines_of_a_traced_request_join_its_trace(
    settings: Settings,
    contract: Contract,
    service_logging: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A contract the server no longer meets, so the request logs a breach (mode "log").
    document = copy.deepcopy(contract.document)
    document["components"]["schemas"]["Health"]["properties"]["status"]["enum"] = ["fine"]
    logged = replace(settings, response_validation="log")
    app = create_app(logged, contract=Contract(document), tracer_provider=TracerProvider())
    service_logging("json")
    testing.TestClient(app).simulate_get("/healthz", headers={"traceparent": TRACEPARENT})
    logging.getLogger("authgate.test").warning("outside any request")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [breach] = [line for line in lines if line["logger"] == "auth_service.validation"]
    assert breach["level"] == "error" and breach["operation"] == "healthz"
    assert breach["trace_id"] == TRACE_ID
    [outside] = [line for line in lines if line["logger"] == "authgate.test"]
    assert "trace_id" not in outside


def test_console_access_line_is_readable(
    api: Api, service_logging: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    user = api.user("console@example.com")
    service_logging("console")
    api.client.simulate_get(
        "/api/v1/auth/me", headers={**bearer(user["access_token"]), "X-Request-ID": "rid-42"}
    )
    api.client.simulate_get("/nothing-here")
    lines = [line for line in capsys.readouterr().err.splitlines() if "authgate.access" in line]
    assert len(lines) == 2, lines
    me, missing = lines
    assert re.search(
        rf"INFO authgate\.access GET /api/v1/auth/me 200 \d+\.\dms rid=rid-42 "
        rf"user={user['id']} ip=127\.0\.0\.1$",
        me,
    ), me
    assert re.search(r"GET \(unmatched\) 404 \d+\.\dms rid=[0-9a-f]{32} user=- ip=", missing), (
        missing
    )
    assert not me.lstrip().startswith("{")


# --------------------------------------------------------------------------- no secrets


def test_a_full_flow_at_debug_logs_no_password_or_token(
    settings: Settings,
    contract: Contract,
    inbox: tuple[Inbox, int],
    service_logging: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    mail, port = inbox
    smtp = replace(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=port,
        password_reset_url=RESET_URL,
        email_verification_url=VERIFY_URL,
        response_validation="log",
    )
    provider = TracerProvider()  # tracing on too: span attributes must not leak either
    service = create_service(smtp, contract=contract, tracer_provider=provider)
    service.mail_sender.start()  # the outbox's SQL and the mail it sends are logged too
    api = Api(testing.TestClient(service.app))
    service_logging("json")
    caplog.set_level(logging.DEBUG)
    # As if SQLAlchemy's echo were on: statements and their parameters are logged.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    # The test's own SMTP server logs the mail it receives; carrying the token is its job.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    email = "secret-keeper@example.com"
    reset_password, changed_password = "reset pass phrase 1", "changed pass phrase 2"
    wrong_password, long_password = "wrong horse battery", "é" * 36 + "x"
    try:
        secrets = [PASSWORD, reset_password, changed_password, wrong_password, long_password]
        assert api.register(email).status_code == 201
        verification = verification_token_from(mail.wait_for(1, subject=VERIFY_SUBJECT)[0][1])
        secrets.append(verification)
        verified = api.client.simulate_post(
            "/api/v1/auth/verify-email", json={"token": verification}
        )
        assert verified.status_code == 204
        assert api.login(email, wrong_password).status_code == 401
        assert api.login(email, long_password).status_code in (401, 422)
        first = api.login(email)
        assert first.status_code == 200
        secrets += [first.json["access_token"], first.json["refresh_token"]]
        rotated = api.client.simulate_post(
            "/api/v1/auth/refresh", json={"refresh_token": first.json["refresh_token"]}
        )
        assert rotated.status_code == 200
        secrets += [rotated.json["access_token"], rotated.json["refresh_token"]]
        me = api.client.simulate_get(
            "/api/v1/auth/me",
            headers={**bearer(rotated.json["access_token"]), "traceparent": TRACEPARENT},
        )
        assert me.status_code == 200

        requested = api.client.simulate_post("/api/v1/auth/password-reset", json={"email": email})
        assert requested.status_code == 202
        token = reset_token_from(mail.wait_for(1, subject=RESET_SUBJECT)[0][1])
        secrets.append(token)
        confirmed = api.client.simulate_post(
            "/api/v1/auth/password-reset/confirm",
            json={"token": token, "new_password": reset_password},
        )
        assert confirmed.status_code == 204
        again = api.client.simulate_post(
            "/api/v1/auth/password-reset/confirm",
            json={"token": token, "new_password": reset_password},
        )
        assert again.status_code == 400

        second = api.login(email, reset_password)
        assert second.status_code == 200
        secrets += [second.json["access_token"], second.json["refresh_token"]]
        changed = api.client.simulate_put(
            "/api/v1/users/me/password",
            json={"current_password": reset_password, "new_password": changed_password},
            headers=bearer(second.json["access_token"]),
        )
        assert changed.status_code == 204
        logout = api.client.simulate_post(
            "/api/v1/auth/logout", json={"refresh_token": second.json["refresh_token"]}
        )
        assert logout.status_code == 204
    finally:
        service.mail_sender.stop()
        logging.getLogger("sqlalchemy.engine").setLevel(logging.NOTSET)
        logging.getLogger("mail.log").setLevel(logging.NOTSET)

    captured = capsys.readouterr()
    records = "\n".join(f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records)
    output = {"stderr": captured.err, "stdout": captured.out, "records": records}
    assert len(access_lines(captured.err)) >= 12, "the service's handler wrote no access lines"
    assert "sqlalchemy.engine" in records, "SQL logging was not on: the check would prove little"
    for where, text in output.items():
        leaked = [secret[:12] + "..." for secret in secrets if secret in text]
        assert not leaked, f"{where} contains secrets: {leaked}"
