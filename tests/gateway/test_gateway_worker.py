"""The services' gunicorn worker (deploy/gunicorn_worker.py) and listeners, through the
gateway: keep-alive served in place, never hoarded; gunicorn's own errors as problems.

Real gunicorn, real sockets: one keep-alive connection stays correct over many requests,
pipelined requests are answered in order, an idle kept-alive connection does not hold the
only thread, and connections spread over the workers (one listening socket per worker).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import requests
from gateway_support import Echo, Gateway, gateway_env
from problem_observer import observe
from process_support import GUNICORN, REPO

from authgate_common.problem_types import ProblemType

sys.path.insert(0, str(REPO / "deploy"))  # the worker module, as gunicorn's config loads it
import gunicorn_worker
from gunicorn import util as gunicorn_util
from gunicorn.http import parser as gunicorn_parser
from gunicorn.http import wsgi as gunicorn_wsgi

REQUEST = b"GET /api/v1/catalog/item/%d HTTP/1.1\r\nHost: gw\r\nX-Seq: %d\r\n\r\n"


def read_response(sock: socket.socket, pending: bytearray) -> tuple[int, dict]:
    """Read one Content-Length response from sock; leftover bytes stay in `pending`."""
    while b"\r\n\r\n" not in pending:
        data = sock.recv(65536)
        assert data, "the gateway closed the connection"
        pending += data
    head, _, _ = bytes(pending).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(fields["content-length"])
    start = len(head) + 4
    while len(pending) < start + length:
        pending += sock.recv(65536)
    body = bytes(pending[start : start + length])
    del pending[: start + length]
    return int(lines[0].split()[1]), json.loads(body)


def test_one_keep_alive_connection_serves_many_requests(start_gateway, echo: Echo):
    gw = start_gateway(gateway_env(echo), workers=1)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    try:
        conn.connect()
        first_socket = conn.sock
        for seq in range(200):
            conn.request("GET", f"/api/v1/catalog/item/{seq}", headers={"X-Seq": str(seq)})
            resp = conn.getresponse()
            seen = json.loads(resp.read())
            assert resp.status == 200
            assert seen["path"] == f"/api/v1/catalog/item/{seq}"
            assert dict(seen["headers"])["x-seq"] == str(seq)
            assert resp.getheader("Connection", "keep-alive").lower() != "close"
        assert conn.sock is first_socket, "the gateway closed a keep-alive connection"
    finally:
        conn.close()


def test_pipelined_requests_answered_in_order(start_gateway, echo: Echo):
    gw = start_gateway(gateway_env(echo), workers=1)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"".join(REQUEST % (seq, seq) for seq in range(5)))
        pending = bytearray()
        for seq in range(5):
            status, seen = read_response(sock, pending)
            assert status == 200
            assert seen["path"] == f"/api/v1/catalog/item/{seq}"


def test_idle_keep_alive_connection_does_not_hold_the_only_thread(start_gateway, echo: Echo):
    gw = start_gateway(gateway_env(echo, GATEWAY_THREADS="1"), workers=1)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as idle:
        idle.sendall(REQUEST % (1, 1))
        assert read_response(idle, bytearray())[0] == 200
        # `idle` stays open and silent; the one thread must still serve everybody else.
        started = time.monotonic()
        for seq in range(20):
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as other:
                other.sendall(REQUEST % (seq, seq))
                assert read_response(other, bytearray())[0] == 200
        # A liveness bound, not a benchmark: a held thread would stall each request for
        # the keep-alive timeout (5 s) and time the client out.
        assert time.monotonic() - started < 4
        idle.sendall(REQUEST % (2, 2))
        assert read_response(idle, bytearray())[0] == 200


def test_connections_spread_over_both_workers(start_gateway, echo: Echo):
    gw = start_gateway(gateway_env(echo), workers=2)
    clients = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(16)]
    try:
        for seq, sock in enumerate(clients):
            sock.sendall(REQUEST % (seq, seq))
            assert read_response(sock, bytearray())[0] == 200
        held = connections_per_worker(gw, {sock.getsockname()[1] for sock in clients})
        assert len(held) == 2, f"workers: {held}"
        assert sum(held.values()) == 16, held
        # With one shared listening socket, one worker can accept a whole burst; each
        # worker's own SO_REUSEPORT socket gets a share (all 16 on one: p = 2 / 2**16).
        assert min(held.values()) >= 1, held
        # gunicorn's own "Listening at" names no address when each worker binds its own.
        assert f"Workers listen at 127.0.0.1:{gw.port}, one socket each" in gw.output()
    finally:
        for sock in clients:
            sock.close()


@pytest.mark.parametrize(
    ("request_bytes", "problem"),
    [
        pytest.param(
            b"GET /api/v1/catalog/x HTTP/1.1 extra\r\n\r\n",
            ProblemType.BAD_REQUEST,
            id="request-line",
        ),
        pytest.param(
            b"GET /api/v1/catalog/x HTTP/1.1\r\nBad Name: 1\r\n\r\n",
            ProblemType.BAD_REQUEST,
            id="name",
        ),
        pytest.param(
            b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", ProblemType.URI_TOO_LONG, id="long-line"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
            ProblemType.HEADER_FIELDS_TOO_LARGE,
            id="many-fields",
        ),
        pytest.param(
            b"POST /api/v1/catalog/x HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
            ProblemType.EXPECTATION_FAILED,
            id="expect",
        ),
        pytest.param(
            b"POST /api/v1/catalog/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: zstd-x\r\n\r\n",
            ProblemType.NOT_IMPLEMENTED,
            id="transfer-coding",
        ),
    ],
)
def test_requests_gunicorn_refuses_get_a_problem(
    gateway: Gateway, request_bytes: bytes, problem: ProblemType
):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert int(lines[0].split()[1]) == problem.status, answer[:300]
    assert fields["content-type"] == "application/problem+json"
    assert int(fields["content-length"]) == len(body)
    assert fields["x-content-type-options"] == "nosniff"
    document = json.loads(body)
    observe(document, problem)
    assert document["request_id"] == fields["x-request-id"]
    assert b"<html" not in answer.lower()


def test_second_copy_on_the_same_port_refuses_to_start(start_gateway, echo: Echo):
    first = start_gateway(gateway_env(echo), workers=1)
    env = {
        **os.environ,
        **gateway_env(echo),
        "GATEWAY_PORT": str(first.port),
        "WEB_CONCURRENCY": "1",
        "PYTHONPATH": str(REPO),
    }
    # With reuse_port the workers' binds would succeed and share the port's traffic.
    second = subprocess.run(
        [GUNICORN, "-c", str(REPO / "deploy" / "gunicorn_gateway.conf.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1, second.stderr[-2000:]
    assert f"127.0.0.1:{first.port} is already in use" in second.stderr
    assert "Booting worker" not in second.stderr
    with socket.create_connection(("127.0.0.1", first.port), timeout=5) as sock:
        sock.sendall(REQUEST % (1, 1))
        assert read_response(sock, bytearray())[0] == 200


def connections_per_worker(gw: Gateway, client_ports: set[int]) -> dict[int, int]:
    """The connections from these client ports, counted per worker process holding them.

    Only ours: the start-up health probe's connection may still be open on the server side.
    """
    workers = [pid for pid in _pids() if _parent(pid) == gw.proc.pid]
    inodes = _established_inodes(gw.port, client_ports)
    counts = {}
    for pid in workers:
        fds = Path(f"/proc/{pid}/fd")
        links = {os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()}
        counts[pid] = sum(f"socket:[{inode}]" in links for inode in inodes)
    return counts


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def _established_inodes(port: int, client_ports: set[int]) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            # ESTABLISHED, server side, from one of our clients
            if local_port == port and fields[3] == "01" and remote_port in client_ports:
                inodes.add(fields[9])
    return inodes


def _module_without(module: types.ModuleType, name: str) -> types.ModuleType:
    """A copy of `module` lacking one attribute, as a gunicorn upgrade might ship it."""
    copy = types.ModuleType(module.__name__)
    copy.__dict__.update({k: v for k, v in vars(module).items() if k != name})
    return copy


def test_installed_gunicorn_has_every_internal_the_worker_uses():
    assert gunicorn_worker.missing_internals(gunicorn_util, gunicorn_wsgi, gunicorn_parser) == []
    assert gunicorn_worker.INTERNALS_USABLE


@pytest.mark.parametrize(
    ("module", "name", "reported"),
    [
        ("util", "write_error", "gunicorn.util.write_error"),
        ("util", "write_nonblock", "gunicorn.util.write_nonblock"),
        ("wsgi", "SERVER", "gunicorn.http.wsgi.SERVER"),
        ("parser", "RequestParser", "gunicorn.http.parser.RequestParser().unreader.buf"),
    ],
)
def test_each_missing_internal_is_named(module: str, name: str, reported: str):
    modules = {"util": gunicorn_util, "wsgi": gunicorn_wsgi, "parser": gunicorn_parser}
    modules[module] = _module_without(modules[module], name)
    missing = gunicorn_worker.missing_internals(modules["util"], modules["wsgi"], modules["parser"])
    assert missing == [reported]


def test_stock_gthread_fallback_still_serves(start_gateway, echo: Echo):
    gw = start_gateway(gateway_env(echo, AUTHGATE_GUNICORN_STOCK="1"), workers=2)
    for seq in range(20):
        resp = requests.get(f"{gw.url}/api/v1/catalog/item/{seq}", timeout=5)
        assert resp.status_code == 200
        assert resp.json()["path"] == f"/api/v1/catalog/item/{seq}"
    # Stock behaviour, said once (by the master, not once per worker).
    warnings = [line for line in gw.output().splitlines() if "stock gthread" in line]
    assert len(warnings) == 1, gw.output()[-2000:]
    assert "AUTHGATE_GUNICORN_STOCK=1" in warnings[0]
    assert resp.headers["Server"] == "gunicorn"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/catalog/x HTTP/1.1 extra\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"application/problem+json" not in answer  # gunicorn's own page
