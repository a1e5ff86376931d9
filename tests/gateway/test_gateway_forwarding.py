"""What crosses the gateway: headers, paths, queries, bodies and statuses (real gunicorn)."""

from __future__ import annotations

import base64
import http.client
import json
import re

import pytest
import requests
from gateway_support import Echo, Gateway, Minter, gateway_env
from problem_observer import observe

from authgate_common.problem_types import ProblemType


def raw_request(
    gateway: Gateway,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send exactly these header lines (any spelling, duplicates kept) and this target."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"gw.example:{gateway.port}")
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def seen_headers(payload: dict) -> dict[str, str]:
    """The echo's header list as a dict (names lower-cased by WSGI)."""
    return dict(payload["headers"])


def test_spoofed_identity_headers_never_reach_upstream(gateway: Gateway, minter: Minter):
    token = minter.token(sub="user-42", sid="sess-42", role="user")
    status, _headers, body = raw_request(
        gateway,
        "GET",
        "/api/v1/orders/1",
        [
            ("Authorization", f"Bearer {token}"),
            ("X-User-Id", "admin"),
            ("x-user-id", "root"),
            ("X-USER-ROLES", "admin"),
            ("x-User-Roles", "superuser"),
            ("X-Session-Id", "forged"),
            ("X-SESSION-ID", "forged2"),
        ],
    )
    assert status == 200, body
    seen = json.loads(body)
    values = [v for k, v in seen["headers"] if k in ("x-user-id", "x-user-roles", "x-session-id")]
    assert sorted(values) == ["sess-42", "user", "user-42"]
    assert seen_headers(seen)["x-user-id"] == "user-42"
    assert seen_headers(seen)["x-user-roles"] == "user"
    assert seen_headers(seen)["x-session-id"] == "sess-42"


def test_identity_headers_stripped_on_public_routes_too(gateway: Gateway):
    status, _, body = raw_request(
        gateway,
        "GET",
        "/api/v1/catalog/items",
        [
            ("X-User-Id", "admin"),
            ("X-User-Roles", "admin"),
            ("X-Session-Id", "x"),
        ],
    )
    assert status == 200, body
    names = {k for k, _ in json.loads(body)["headers"]}
    assert not names & {"x-user-id", "x-user-roles", "x-session-id"}


def test_hop_by_hop_request_headers_removed(gateway: Gateway):
    status, _, body = raw_request(
        gateway,
        "GET",
        "/api/v1/catalog/x",
        [
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Foo"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "h2c"),
            ("X-Kept", "yes"),
        ],
    )
    assert status == 200, body
    seen = seen_headers(json.loads(body))
    for name in (
        "x-secret-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ):
        assert name not in seen, name
    assert seen["x-kept"] == "yes"
    # The gateway manages the upstream connection itself: keep-alive, never the client's list.
    assert seen.get("connection", "keep-alive").lower() == "keep-alive"


def test_hop_by_hop_response_headers_removed(start_gateway, echo: Echo, raw_upstream):
    body = b'{"ok":true}'
    upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: X-Internal-Hop\r\nX-Internal-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Authenticate: Basic\r\nServer: Apache/2.4.1 (internal)\r\n"
        b"X-Powered-By: PHP/5\r\nTrailer: X-Foo\r\nUpgrade: h2c\r\nX-Upstream-Kept: 1\r\n"
        b"Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\n\r\n" + body
    )
    routes = [{"prefix": "/api/v1/raw", "upstream": upstream.url, "auth": "none"}]
    gw = start_gateway(gateway_env(echo, GATEWAY_ROUTES=json.dumps(routes)))
    resp = requests.get(f"{gw.url}/api/v1/raw/x", timeout=5)
    assert resp.status_code == 200
    assert resp.content == body
    for name in (
        "X-Internal-Hop",
        "Keep-Alive",
        "Proxy-Authenticate",
        "X-Powered-By",
        "Trailer",
        "Upgrade",
    ):
        assert name not in resp.headers, name
    assert resp.headers["X-Upstream-Kept"] == "1"
    assert resp.headers["Server"] == "authgate"
    assert resp.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_forwarded_headers_from_untrusted_peer(gateway: Gateway):
    status, _, body = raw_request(
        gateway,
        "GET",
        "/api/v1/catalog/x",
        [
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
        ],
    )
    assert status == 200
    seen = seen_headers(json.loads(body))
    assert "x-real-ip" not in seen
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"gw.example:{gateway.port}"
    assert "forwarded" not in seen


def test_forwarded_headers_from_trusted_proxy(start_gateway, echo: Echo):
    gw = start_gateway(gateway_env(echo, TRUSTED_PROXIES="127.0.0.0/8"))
    status, _, body = raw_request(
        gw,
        "GET",
        "/api/v1/catalog/x",
        [
            ("X-Forwarded-For", "203.0.113.9, 10.1.1.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "api.example"),
        ],
    )
    assert status == 200
    seen = seen_headers(json.loads(body))
    assert seen["x-forwarded-for"] == "203.0.113.9, 10.1.1.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "api.example"


def test_request_id_kept_when_sane(gateway: Gateway):
    resp = requests.get(
        f"{gateway.url}/api/v1/catalog/x", headers={"X-Request-ID": "abc.DEF_123-xyz"}, timeout=5
    )
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == "abc.DEF_123-xyz"
    assert seen_headers(resp.json())["x-request-id"] == "abc.DEF_123-xyz"


@pytest.mark.parametrize("bad", ["a" * 129, "has space", "semi;colon", "<script>", ""])
def test_request_id_generated_when_insane_or_missing(gateway: Gateway, bad: str):
    headers = {"X-Request-ID": bad} if bad else {}
    resp = requests.get(f"{gateway.url}/api/v1/catalog/x", headers=headers, timeout=5)
    assert resp.status_code == 200
    rid = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert seen_headers(resp.json())["x-request-id"] == rid


def test_request_id_on_gateway_errors(gateway: Gateway):
    resp = requests.get(
        f"{gateway.url}/api/v1/orders/1", headers={"X-Request-ID": "trace-me-1"}, timeout=5
    )
    assert resp.status_code == 401
    assert resp.headers["X-Request-ID"] == "trace-me-1"
    assert resp.json()["request_id"] == "trace-me-1"


def test_traceparent_propagated_or_generated(gateway: Gateway):
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    resp = requests.get(
        f"{gateway.url}/api/v1/catalog/x",
        headers={"traceparent": parent, "tracestate": "vendor=1"},
        timeout=5,
    )
    seen = seen_headers(resp.json())
    assert seen["traceparent"] == parent
    assert seen["tracestate"] == "vendor=1"
    for headers in (
        {},
        {"traceparent": "garbage", "tracestate": "vendor=1"},
        {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
    ):
        seen = seen_headers(
            requests.get(f"{gateway.url}/api/v1/catalog/x", headers=headers, timeout=5).json()
        )
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", seen["traceparent"])
        assert seen["traceparent"] != headers.get("traceparent")
        assert "0" * 32 not in seen["traceparent"]
        assert "tracestate" not in seen


@pytest.mark.parametrize(
    "query",
    [
        "a=1&b=2&a=3",
        "q=%20%2B%26%3D%25%00%FF&empty=&flag&x=a+b",
        "redirect=%2Fapi%2Fv1%2Fusers%3Fx%3D1&%E2%9C%93=%E2%9C%93",
        "x=%2E%2E%2F..&%F0%9F%94%91=%22%3C%3E%22",
        # Lower-case escapes stay lower-case: equivalent (RFC 3986 6.2.2.1), but not ours
        # to rewrite.
        "x=%2e%2e%2f..&y=%c3%a9",
        # One stray "%" makes urllib3 re-encode every escape ("%41" -> "%2541"): the
        # gateway sends the target past that re-encoding.
        "x=%41&pct=100%&raw=%zz",
    ],
)
def test_query_string_byte_for_byte(gateway: Gateway, query: str):
    status, _, body = raw_request(gateway, "GET", f"/api/v1/catalog/search?{query}", [])
    assert status == 200, body
    seen = json.loads(body)
    assert seen["query"] == query
    assert seen["raw_uri"] == f"/api/v1/catalog/search?{query}"


def test_path_sent_as_received(gateway: Gateway):
    target = "/api/v1/catalog/items/%E2%9C%93/a%20b/c%3Fd/e;f=g/~user"
    status, _, body = raw_request(gateway, "GET", target, [])
    assert status == 200, body
    assert json.loads(body)["path"] == target


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_binary_body_all_byte_values(gateway: Gateway, method: str):
    payload = bytes(range(256)) * 4
    resp = requests.request(
        method,
        f"{gateway.url}/api/v1/catalog/blob",
        data=payload,
        headers={"Content-Type": "application/octet-stream"},
        timeout=5,
    )
    assert resp.status_code == 200
    seen = resp.json()
    assert seen["method"] == method
    assert base64.b64decode(seen["body_b64"]) == payload
    assert seen_headers(seen)["content-type"] == "application/octet-stream"
    assert seen_headers(seen)["content-length"] == str(len(payload))


def test_chunked_request_body_forwarded(gateway: Gateway):
    chunks = [bytes(range(256)), b"tail"]
    resp = requests.post(f"{gateway.url}/api/v1/catalog/blob", data=iter(chunks), timeout=5)
    assert resp.status_code == 200
    seen = resp.json()
    assert base64.b64decode(seen["body_b64"]) == b"".join(chunks)
    assert "transfer-encoding" not in seen_headers(seen)


def test_large_binary_response_intact(gateway: Gateway):
    resp = requests.get(
        f"{gateway.url}/api/v1/catalog/big",
        headers={"X-Echo-Body-Size": str(3 * 1024 * 1024 + 7)},
        timeout=10,
    )
    assert resp.status_code == 200
    assert len(resp.content) == 3 * 1024 * 1024 + 7
    assert resp.content == bytes(i % 251 for i in range(3 * 1024 * 1024 + 7))


@pytest.mark.parametrize(
    "status", [200, 201, 202, 204, 301, 304, 400, 404, 409, 418, 422, 500, 503]
)
def test_status_codes_preserved(gateway: Gateway, status: int):
    resp = requests.get(
        f"{gateway.url}/api/v1/catalog/status",
        headers={"X-Echo-Status": str(status), "X-Echo-Header": "Location: /elsewhere"},
        allow_redirects=False,
        timeout=5,
    )
    assert resp.status_code == status
    if status not in (204, 304):
        assert resp.json()["method"] == "GET"
    if status == 301:
        assert resp.headers["Location"] == "/elsewhere"


def test_unreadable_upstream_error_becomes_problem(gateway: Gateway):
    resp = requests.get(
        f"{gateway.url}/api/v1/catalog/boom",
        headers={
            "X-Echo-Status": "500",
            "X-Echo-Content-Type": "text/html",
            "X-Request-ID": "rid-500",
        },
        timeout=5,
    )
    assert resp.status_code == 500
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem = resp.json()
    observe(problem, ProblemType.UPSTREAM_ERROR, 500)
    assert problem["request_id"] == "rid-500"
    assert "internal-host" not in resp.text
    assert "<html>" not in resp.text


def test_upstream_server_header_not_leaked(gateway: Gateway):
    resp = requests.get(f"{gateway.url}/api/v1/catalog/x", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Server"] == "authgate"
    assert "gunicorn" not in str(resp.headers).lower()
    assert "X-Powered-By" not in resp.headers


def test_no_client_user_agent_means_none_upstream(gateway: Gateway):
    status, _, body = raw_request(gateway, "GET", "/api/v1/catalog/x", [])
    seen = seen_headers(json.loads(body))
    assert status == 200
    assert "user-agent" not in seen
    assert "accept-encoding" not in seen
    status, _, body = raw_request(
        gateway,
        "GET",
        "/api/v1/catalog/x",
        [("User-Agent", "client/1.0"), ("Accept-Encoding", "gzip")],
    )
    seen = seen_headers(json.loads(body))
    assert seen["user-agent"] == "client/1.0"
    assert seen["accept-encoding"] == "gzip"


def test_head_has_length_but_no_body(gateway: Gateway):
    resp = requests.head(f"{gateway.url}/api/v1/catalog/x", timeout=5)
    assert resp.status_code == 200
    assert resp.content == b""
    assert int(resp.headers["Content-Length"]) > 100  # the GET's length, as the echo says
    assert resp.headers["Content-Type"] == "application/json"
