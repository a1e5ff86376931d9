"""Edge defences: body limit, path traversal, security headers, CORS, own endpoints, errors."""

from __future__ import annotations

import http.client
import json

import falcon
import pytest
import requests
from falcon import testing
from gateway_support import Echo, Gateway, Minter, free_port, gateway_env, launch_gateway
from problem_observer import observe

from authgate_common.problem_types import ProblemType
from gateway_service.app import create_app


def raw(
    gateway: Gateway,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send a request target exactly as written (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    finally:
        conn.close()


def test_body_over_limit_by_content_length(gateway: Gateway, echo: Echo):
    before = echo.hits()["echo"]
    resp = requests.post(f"{gateway.url}/api/v1/catalog/upload", data=b"x" * 5000, timeout=5)
    assert resp.status_code == 413
    assert resp.headers["Content-Type"] == "application/problem+json"
    observe(resp.json(), ProblemType.CONTENT_TOO_LARGE)
    assert echo.hits()["echo"] == before
    assert (
        requests.post(
            f"{gateway.url}/api/v1/catalog/upload", data=b"x" * 4096, timeout=5
        ).status_code
        == 200
    )


def test_chunked_body_over_limit(gateway: Gateway, echo: Echo):
    before = echo.hits()["echo"]
    chunks = (b"y" * 1000 for _ in range(10))
    resp = requests.post(f"{gateway.url}/api/v1/catalog/upload", data=chunks, timeout=5)
    assert resp.status_code == 413
    assert echo.hits()["echo"] == before


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/auth/../users",
        "/api/v1/auth/%2e%2e/users",
        "/api/v1/auth/%2E%2E/users",
        "/api/v1/auth/.%2e/users",
        "/api/v1/catalog/../users",
        "/api/v1/catalog/..//users/",
        "//api/v1/catalog/../users",
        "/x/../../../api/v1/catalog/%2E%2E/users",
        "/api/v1/auth/login/../../users",
    ],
)
def test_traversal_never_reaches_protected_upstream(gateway: Gateway, echo: Echo, target: str):
    before = echo.hits()["echo"]
    status, headers, body = raw(gateway, "GET", target)
    assert status == 401, body
    assert headers["www-authenticate"] == "Bearer"
    assert echo.hits()["echo"] == before


def test_traversal_with_token_sends_normalised_path(gateway: Gateway, minter: Minter):
    status, _, body = raw(
        gateway,
        "GET",
        "/api/v1/auth/%2e%2e/users//x/./y",
        {"Authorization": f"Bearer {minter.token()}"},
    )
    assert status == 200
    assert json.loads(body)["path"] == "/api/v1/users/x/y"


@pytest.mark.parametrize(
    "path", ["/api/v1/catalog/x", "/api/v1/orders/1", "/nowhere", "/healthz", "/openapi.json"]
)
def test_security_headers_everywhere(gateway: Gateway, path: str):
    resp = requests.get(f"{gateway.url}{path}", timeout=5)
    headers = resp.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Server"] == "authgate"
    assert "X-Powered-By" not in headers


def test_unknown_path_is_problem_404(gateway: Gateway):
    resp = requests.get(f"{gateway.url}/nowhere", timeout=5)
    assert resp.status_code == 404
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["status"] == 404


def test_docs_served_locally(gateway: Gateway):
    page = requests.get(f"{gateway.url}/docs", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "https://" not in page.text and "http://" not in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for asset in (
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-ui-standalone-preset.js",
        "gateway-init.js",
    ):
        assert f"/docs/assets/{asset}" in page.text
        resp = requests.get(f"{gateway.url}/docs/assets/{asset}", timeout=5)
        assert resp.status_code == 200, asset
        assert len(resp.content) > 100
    init = requests.get(f"{gateway.url}/docs/assets/gateway-init.js", timeout=5)
    assert '"/openapi.json"' in init.text
    assert (
        requests.get(f"{gateway.url}/docs/assets/..%2F..%2Fsettings.py", timeout=5).status_code
        == 404
    )
    assert requests.get(f"{gateway.url}/docs/assets/index.html", timeout=5).status_code == 404


def test_openapi_document(gateway: Gateway):
    resp = requests.get(f"{gateway.url}/openapi.json", timeout=5)
    assert resp.status_code == 200
    spec = resp.json()
    assert spec["servers"] == [{"url": "/"}]
    assert spec["paths"]["/api/v1/auth/login"]["post"]["operationId"] == "login"


def test_readyz(gateway: Gateway, start_gateway, echo: Echo):
    ready = requests.get(f"{gateway.url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert set(ready.json()["checks"].values()) == {"ok"}
    down = f"http://127.0.0.1:{free_port()}"
    routes = json.dumps([{"prefix": "/api/v1/down", "upstream": down}])
    gw = start_gateway(gateway_env(echo, GATEWAY_ROUTES=routes), workers=1)
    resp = requests.get(f"{gw.url}/readyz", timeout=10)
    assert resp.status_code == 503
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["detail"] == "Not ready: upstream:/api/v1/down"
    observe(resp.json(), ProblemType.NOT_READY)
    assert "127.0.0.1" not in resp.text


ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def cors_gateway(echo: Echo):
    """A gateway with one allowed origin."""

    gw = launch_gateway(gateway_env(echo, CORS_ORIGINS=f"{ORIGIN},https://other.example"))
    yield gw
    gw.stop()


def test_cors_preflight_allowed(cors_gateway: Gateway, echo: Echo):
    before = echo.hits()["echo"]
    resp = requests.options(
        f"{cors_gateway.url}/api/v1/orders/1",
        timeout=5,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert resp.headers["Access-Control-Max-Age"] == "600"
    assert resp.headers["Vary"] == "Origin"
    assert echo.hits()["echo"] == before  # answered at the gateway, no token needed


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-User-Id",
        },
    ],
)
def test_cors_preflight_refused(cors_gateway: Gateway, headers):
    resp = requests.options(f"{cors_gateway.url}/api/v1/orders/1", headers=headers, timeout=5)
    assert resp.status_code == 204
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    assert resp.headers["Vary"] == "Origin"


def test_cors_actual_requests(cors_gateway: Gateway):
    ok = requests.get(f"{cors_gateway.url}/api/v1/catalog/x", headers={"Origin": ORIGIN}, timeout=5)
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-ID" in ok.headers["Access-Control-Expose-Headers"]
    assert "Origin" in ok.headers["Vary"]
    denied = requests.get(
        f"{cors_gateway.url}/api/v1/orders/1", headers={"Origin": "https://evil.example"}, timeout=5
    )
    assert denied.status_code == 401
    assert "Access-Control-Allow-Origin" not in denied.headers
    no_cors = requests.get(f"{cors_gateway.url}/api/v1/catalog/x", timeout=5)
    assert "Access-Control-Allow-Origin" not in no_cors.headers


def test_non_latin1_header_does_not_crash(settings_for):
    client = testing.TestClient(create_app(settings_for()))
    result = client.simulate_get("/api/v1/catalog/x", headers={"X-Note": "caf\u00e9 \u2713"})
    assert result.status_code in (200, 400)
    if result.status_code == 200:
        assert "x-note" not in dict(result.json["headers"])


def test_unexpected_error_is_bare_500(settings_for):
    app = create_app(settings_for())

    class Broken:
        def on_get(self, req, resp):
            raise RuntimeError("secret internal detail at db-host-3")

    app.add_route("/broken", Broken())
    result = testing.TestClient(app).simulate_get("/broken", headers={"X-Request-ID": "r-500"})
    assert result.status_code == 500
    assert result.headers["Content-Type"] == "application/problem+json"
    assert result.json == {
        "type": "https://authgate.dev/problems/internal-error",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "An unexpected error occurred.",
        "request_id": "r-500",
    }
    assert result.headers["X-Content-Type-Options"] == "nosniff"
    observe(result.json, ProblemType.INTERNAL_ERROR)


def test_only_registered_problem_types_leave(settings_for):
    app = create_app(settings_for())

    class Refusing:
        def on_get(self, req, resp, kind):
            if kind == "named-by-string":
                raise falcon.HTTPBadRequest(description="bad", code="not_registered")
            raise falcon.HTTPError(falcon.HTTP_418, description="no type for this status")

    app.add_route("/refusing/{kind}", Refusing())
    client = testing.TestClient(app)
    # A plain string is never a type: the error gets its status's generic one.
    named = client.simulate_get("/refusing/named-by-string")
    observe(named.json, ProblemType.BAD_REQUEST)
    assert named.json["detail"] == "bad"
    # A status the registry has no type for is a bug: a bare 500.
    unknown = client.simulate_get("/refusing/unregistered-status")
    assert unknown.status_code == 500
    observe(unknown.json, ProblemType.INTERNAL_ERROR)
    assert "detail" not in unknown.json


def test_metrics_by_route_not_raw_path(settings_for, minter: Minter):
    client = testing.TestClient(create_app(settings_for()))
    for i in range(3):
        assert client.simulate_get(f"/api/v1/catalog/item-{i}").status_code == 200
    assert client.simulate_get("/api/v1/orders/1").status_code == 401
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["Content-Type"].startswith("text/plain")
    text = result.text
    assert 'gateway_requests_total{method="GET",route="/api/v1/catalog",status="200"} 3.0' in text
    assert 'gateway_requests_total{method="GET",route="/api/v1/orders",status="401"} 1.0' in text
    assert "item-1" not in text


def test_access_log_is_one_json_line(settings_for, minter: Minter, caplog):
    client = testing.TestClient(create_app(settings_for()))
    token = minter.token(sub="logged-user")
    with caplog.at_level("INFO", logger="gateway_service.access"):
        client.simulate_get(
            "/api/v1/orders/1?secret=1",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "log-1"},
        )
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway_service.access"
    ]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "log-1"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/api/v1/orders", 200)
    assert line["user_id"] == "logged-user"
    assert line["duration_ms"] > 0
    assert "secret" not in json.dumps(line)


def test_slow_client_does_not_hold_the_gateway(gateway: Gateway):
    import socket
    import time

    slow = []
    for _ in range(4):  # more idle, half-sent requests than... any sync worker could bear
        sock = socket.create_connection(("127.0.0.1", gateway.port))
        sock.sendall(b"GET /api/v1/catalog/x HTTP/1.1\r\nHost: x\r\n")
        slow.append(sock)
    try:
        started = time.monotonic()
        for _ in range(5):
            assert requests.get(f"{gateway.url}/api/v1/catalog/x", timeout=5).status_code == 200
        assert time.monotonic() - started < 2.0
    finally:
        for sock in slow:
            sock.close()


def test_metrics_sum_over_gunicorn_workers(start_gateway, echo: Echo, tmp_path):
    gw = start_gateway(gateway_env(echo, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)), workers=2)
    for _ in range(20):  # new connections: both workers get some
        assert requests.get(f"{gw.url}/api/v1/catalog/m", timeout=5).status_code == 200
    for _ in range(3):  # whichever worker answers, it reports every worker's counts
        text = requests.get(f"{gw.url}/metrics", timeout=5).text
        assert (
            'gateway_requests_total{method="GET",route="/api/v1/catalog",status="200"} 20.0' in text
        )
