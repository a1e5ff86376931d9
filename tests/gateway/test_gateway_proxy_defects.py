"""Proxy defects found by review (issue 11), each through the real gateway and raw upstreams.

Upstream framing the gateway must not trust, an upstream that answers before the upload
ends, one that trickles, and client requests the gateway must refuse before forwarding.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from gateway_support import DripUpstream, Echo, Gateway, RawUpstream, gateway_env, launch_gateway
from test_gateway_faults import assert_problem

BODY = b'{"ok":true}'
ANSWERS = {
    # Transfer-Encoding wins (RFC 9112 6.3): the body is 11 bytes, not 2,000,000.
    "te-and-big-cl": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2000000\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"%x\r\n%b\r\n0\r\n\r\n" % (len(BODY), BODY),
    "long-cl": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + b"9" * 5000
    + b"\r\n\r\n"
    + BODY,
    # A superscript digit: str.isdigit() says yes, int() says no.
    "unicode-cl": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: \xb2\r\n\r\n{}",
    "gzip-te": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "control-byte": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Odd: a\x01b\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "early-413": b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/problem+json\r\n"
    b'Connection: close\r\nContent-Length: 30\r\n\r\n{"status":413,"title":"large"}',
    "ok": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
    % (len(BODY), BODY),
}
BREAKER_FAILURES = 3
BIG_UPLOAD = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, RawUpstream]]:
    """One raw upstream per answer, and one that trickles its answer a byte at a time."""
    servers: dict[str, RawUpstream] = {name: RawUpstream(a) for name, a in ANSWERS.items()}
    servers["drip"] = DripUpstream(ANSWERS["ok"], interval=0.5)
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway(echo: Echo, upstreams: dict[str, RawUpstream]) -> Iterator[Gateway]:
    """A fresh gateway (fresh breakers) with a public route per upstream: /api/v1/raw/<name>."""
    routes = [
        {"prefix": f"/api/v1/raw/{name}", "upstream": server.url, "auth": "none"}
        for name, server in upstreams.items()
    ]
    routes.append({"prefix": "/api/v1/auth", "upstream": echo.url, "auth": "spec"})
    routes.append({"prefix": "/api/v1/users", "upstream": echo.url, "auth": "spec"})
    env = gateway_env(
        echo,
        GATEWAY_ROUTES=json.dumps(routes),
        GATEWAY_BREAKER_FAILURES=str(BREAKER_FAILURES),
        GATEWAY_MAX_BODY_BYTES=str(2 * BIG_UPLOAD),
        GATEWAY_READ_TIMEOUT="2",
        GATEWAY_REQUEST_DEADLINE_SECONDS="2",
    )
    gw = launch_gateway(env, workers=1)
    yield gw
    gw.stop()


def get(gateway: Gateway, name: str, method: str = "GET") -> requests.Response:
    return requests.request(method, f"{gateway.url}/api/v1/raw/{name}/x", timeout=10)


def test_announced_length_is_the_framed_one(gateway: Gateway):
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        for _ in range(2):  # the second answer on the same connection must parse cleanly
            conn.request("GET", "/api/v1/raw/te-and-big-cl/x")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert body == BODY
            assert resp.getheader("Content-Length") in (None, str(len(BODY)))
            assert resp.getheader("Transfer-Encoding") in (None, "chunked")
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["long-cl", "unicode-cl", "gzip-te"])
def test_unusable_length_or_coding_is_502(gateway: Gateway, name: str):
    resp = get(gateway, name)
    assert_problem(resp, 502, "upstream-failed")


def test_control_byte_in_header_is_502_and_counts_against_the_breaker(gateway: Gateway):
    for _ in range(BREAKER_FAILURES):
        resp = get(gateway, "control-byte")
        assert_problem(resp, 502, "upstream-failed")
        assert "X-Odd" not in resp.headers
    assert_problem(get(gateway, "control-byte"), 503, "upstream-unavailable")


def test_early_answer_to_a_large_upload_is_relayed(
    gateway: Gateway, upstreams: dict[str, RawUpstream]
):
    server = upstreams["early-413"]
    server.requests.clear()
    upload = b"x" * BIG_UPLOAD
    for attempt in range(BREAKER_FAILURES + 1):
        resp = requests.put(f"{gateway.url}/api/v1/raw/early-413/x", data=upload, timeout=30)
        assert resp.status_code == 413, resp.text
        assert resp.json() == {"status": 413, "title": "large"}
        # Never re-sent, and the upstream's answer is not a failure: the breaker stays shut.
        assert len(server.requests) == attempt + 1
        assert server.requests[-1].startswith(b"PUT /api/v1/raw/early-413/x HTTP/1.1\r\n")
    assert get(gateway, "ok").status_code == 200


def test_trickling_upstream_meets_the_total_deadline(
    gateway: Gateway, upstreams: dict[str, RawUpstream]
):
    server = upstreams["drip"]
    assert isinstance(server, DripUpstream)
    # A byte every 0.5 s never trips the 2 s read timeout; the 2 s deadline must.
    resp = get(gateway, "drip")
    assert_problem(resp, 504, "upstream-timeout")
    assert server.dropped.wait(timeout=10), "the upstream connection was kept open"


def raw_exchange(gateway: Gateway, head: bytes, body: bytes = b"") -> bytes:
    """Send these bytes on a fresh connection and read the answer until the gateway closes."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


# gunicorn itself refuses stacked chunked, identity and unknown codings; these it passes.
@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate, chunked", "compress, chunked"])
def test_request_transfer_coding_other_than_chunked_is_refused(
    gateway: Gateway, echo: Echo, coding: str
):
    before = echo.hits()
    head = (
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: {coding}\r\n\r\n"
    ).encode()
    answer = raw_exchange(gateway, head, b"2\r\n{}\r\n0\r\n\r\n")
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 501 "), answer[:300]
    assert b"content-type: application/problem+json" in rest.lower()
    assert b'"status":501' in rest
    assert echo.hits() == before


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/api/v1/auth/login", {"POST"}),
        ("PATCH", "/api/v1/auth/login", {"POST"}),
        ("TRACE", "/api/v1/users/123", {"GET", "HEAD", "PUT", "DELETE"}),
    ],
)
def test_undeclared_method_is_405_before_any_token_check(
    gateway: Gateway, echo: Echo, method: str, path: str, allow: set[str]
):
    before = echo.hits()
    resp = requests.request(
        method, f"{gateway.url}{path}", headers={"Authorization": "Bearer junk"}, timeout=10
    )
    assert_problem(resp, 405, "method-not-allowed")
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allow
    assert "WWW-Authenticate" not in resp.headers
    assert echo.hits() == before
    # A declared method on the same path still meets the token check.
    declared = "POST" if "login" in path else "GET"
    if declared == "GET":
        checked = requests.get(
            f"{gateway.url}{path}", headers={"Authorization": "Bearer junk"}, timeout=10
        )
        assert checked.status_code == 401
