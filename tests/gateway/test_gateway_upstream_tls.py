"""https upstreams through the real gateway: verified against GATEWAY_UPSTREAM_CA_FILE."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from gateway_support import Echo, TlsRawUpstream, gateway_env, self_signed_certificate
from test_gateway_faults import assert_problem

from gateway_service.settings import Settings, SettingsError

BODY = b'{"over":"tls"}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
    len(BODY),
    BODY,
)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TlsRawUpstream]]:
    """A TLS upstream with a self-signed certificate, and that certificate as a CA file."""
    folder = tmp_path_factory.mktemp("tls")
    cert_pem, key_pem = self_signed_certificate()
    (folder / "ca.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "ca.pem", folder / "key.pem")
    server = TlsRawUpstream(ANSWER, context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder / "ca.pem", server
    server.shutdown()
    server.server_close()


def tls_routes(server: TlsRawUpstream) -> str:
    return json.dumps([{"prefix": "/api/v1/secure", "upstream": server.url, "auth": "none"}])


def test_https_upstream_trusted_through_the_ca_file(start_gateway, echo: Echo, ca_file):
    path, server = ca_file
    gw = start_gateway(
        gateway_env(echo, GATEWAY_ROUTES=tls_routes(server), GATEWAY_UPSTREAM_CA_FILE=str(path))
    )
    server.requests.clear()
    resp = requests.get(f"{gw.url}/api/v1/secure/x?q=1", timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.content == BODY
    assert len(server.requests) == 1
    assert server.requests[0].startswith(b"GET /api/v1/secure/x?q=1 HTTP/1.1\r\n")
    # The CA file is for https upstreams only: a plain-http one is still reached in clear.
    plain = requests.get(f"{gw.url}/.well-known/jwks.json", timeout=5)
    assert plain.status_code == 200, plain.text


def test_https_upstream_refused_without_the_ca(start_gateway, echo: Echo, ca_file):
    _, server = ca_file
    gw = start_gateway(gateway_env(echo, GATEWAY_ROUTES=tls_routes(server)))
    server.requests.clear()
    resp = requests.get(f"{gw.url}/api/v1/secure/x", timeout=5)
    assert_problem(resp, 502, "upstream-unreachable")
    assert server.requests == [], "a request crossed an unverified TLS connection"


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_bad_ca_file_refused_at_start_up(echo: Echo, tmp_path: Path, content: bytes | None):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SettingsError, match="GATEWAY_UPSTREAM_CA_FILE"):
        Settings.from_env(gateway_env(echo, GATEWAY_UPSTREAM_CA_FILE=str(path)))
