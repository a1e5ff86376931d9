"""Upstream answers in every framing, and malformed ones, through the real gateway.

Each raw upstream sends exactly the bytes given and closes; the client must get the body
intact whatever its framing, and a problem+json 502 for an answer that breaks HTTP/1.1
(never a 500, never the broken bytes).
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
from gateway_support import Echo, RawUpstream, gateway_env, launch_gateway
from test_gateway_faults import assert_problem


def _parts(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


BODY = b'{"items":[1,2,3],"note":"framed"}'
BIG = bytes(i % 251 for i in range(1_500_000))  # over the 1 MiB buffer: streamed
ANSWERS = {
    "big-chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in _parts(BIG, 70_000))
    + b"0\r\n\r\n",
    "big-cut-short": b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%b\r\n" % (len(BIG), BIG),
    "chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n"
    b"5\r\n" + BODY[:5] + b"\r\n1c;ext=1\r\n" + BODY[5:] + b"\r\n0\r\nX-Digest: abc\r\n\r\n",
    "until-close": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\n\r\n" + BODY,
    # Transfer-Encoding wins over Content-Length (RFC 9112 6.3): the smuggling shape.
    "te-and-cl": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n21\r\n" + BODY + b"\r\n0\r\n\r\n",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY,
    # http.client (under urllib3) skips only 100 Continue; any other interim answer would be
    # taken for the final one, so it is refused rather than relayed.
    "early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    "nul-header": b"HTTP/1.1 200 OK\r\nX-Odd: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cut-short": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n" + BODY,
    "bad-status": b"HTTP/1.1 600 Beyond\r\nContent-Length: 0\r\n\r\n",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n0\r\n\r\n",
}


@pytest.fixture(scope="module")
def framing_gateway(echo: Echo):
    """One gateway with a public route per raw upstream: /api/v1/raw/<name>."""
    servers = {name: RawUpstream(answer) for name, answer in ANSWERS.items()}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    routes = [
        {"prefix": f"/api/v1/raw/{name}", "upstream": server.url, "auth": "none"}
        for name, server in servers.items()
    ]
    gateway = launch_gateway(gateway_env(echo, GATEWAY_ROUTES=json.dumps(routes)), workers=1)
    yield gateway
    gateway.stop()
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", ["chunked", "until-close", "te-and-cl", "interim"])
def test_body_relayed_whatever_its_framing(framing_gateway, name: str):
    resp = requests.get(f"{framing_gateway.url}/api/v1/raw/{name}/x", timeout=5)
    assert resp.status_code == 200
    assert resp.content == BODY
    assert resp.headers["Content-Type"] == "application/json"
    # Trailers and the upstream's framing are hop-by-hop: none of them come through.
    for hop in ("Trailer", "X-Digest", "Link"):
        assert hop not in resp.headers, hop


@pytest.mark.parametrize(
    "name",
    ["early-hints", "nul-header", "two-lengths", "cut-short", "bad-status", "bad-chunk"],
)
def test_malformed_answer_is_502_problem(framing_gateway, name: str):
    # Unsized bodies are buffered up to 1 MiB, so even a broken chunk is caught before
    # the status line goes out.
    resp = requests.get(f"{framing_gateway.url}/api/v1/raw/{name}/x", timeout=5)
    assert_problem(resp, 502, "upstream-failed")
    assert b"hello" not in resp.content and b"\x00" not in resp.content


def test_big_unsized_body_streamed_intact(framing_gateway):
    resp = requests.get(f"{framing_gateway.url}/api/v1/raw/big-chunked/x", timeout=10)
    assert resp.status_code == 200
    assert resp.content == BIG


def test_big_body_failing_mid_stream_is_cut_short(framing_gateway):
    # Past the buffer the status line has gone out: the client must see a broken body,
    # never a complete-looking one.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{framing_gateway.url}/api/v1/raw/big-cut-short/x", timeout=10)
