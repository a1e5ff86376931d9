"""UpstreamPool against real sockets: the exact bytes on the wire, framing, reuse, failures.

Each test starts a small threaded TCP server on 127.0.0.1 that answers with fixed bytes and
counts the connections it accepted, so reuse is observed from the server's side.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from gateway_support import self_signed_certificate

from gateway_service.upstream_http import (
    BadResponse,
    Dropped,
    InvalidRequest,
    Unreachable,
    UpstreamPool,
    UpstreamTimeout,
)

# NOTE: every wait on the server side ends within this, so a broken client cannot hang a run.
WAIT = 5.0
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# What `fetch` puts on the wire, given the server's port.
BARE_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"


class Peer:
    """The server's end of one accepted connection."""

    def __init__(self, sock: socket.socket, server: RawServer) -> None:
        self.sock = sock
        self.server = server
        self.buf = bytearray()

    def read_request(self) -> bytes | None:
        """One whole request (head and Content-Length body), or None once the client closed."""
        try:
            while b"\r\n\r\n" not in self.buf:
                if not self._fill():
                    return None
            end = self.buf.index(b"\r\n\r\n") + 4
            length = 0
            for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            while len(self.buf) < end + length:
                if not self._fill():
                    return None
        except OSError:
            return None
        request = bytes(self.buf[: end + length])
        del self.buf[: end + length]
        self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def hold(self) -> None:
        """Keep the connection open, silent, until the test ends."""
        self.server.stopping.wait(WAIT)

    def reset(self) -> None:
        """Abort the connection: the client gets a TCP RST, not a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)


Script = Callable[[Peer], None]
Step = bytes | Script


class RawServer:
    """A TCP server on 127.0.0.1 that runs `script` on each connection it accepts."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.accepted = 0
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.stopping.set()
        for sock in [*self._socks, self._listener]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(WAIT)

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
                self._socks.append(sock)
            self.script(Peer(sock, self))
        except OSError:
            pass  # the client went away: a normal end for these scripts
        except BaseException as ex:
            self.errors.append(ex)
        finally:
            sock.close()


def replies(*steps: Step) -> Script:
    """Answer each request, on whichever connection it arrives, with the next step in turn.

    A step is the bytes to send, or a script run in their place. Once the steps run out a
    connection stays open and silent, so a client that does not reuse it chose not to.
    """
    queue = list(steps)
    lock = threading.Lock()

    def script(peer: Peer) -> None:
        while peer.read_request() is not None:
            with lock:
                step = queue.pop(0) if queue else None
            if step is None:
                peer.hold()
                return
            if isinstance(step, bytes):
                peer.send(step)
            else:
                step(peer)

    return script


def in_pieces(*pieces: bytes) -> Script:
    """Send each piece in its own TCP segment, a pause apart."""

    def script(peer: Peer) -> None:
        for piece in pieces:
            peer.send(piece)
            time.sleep(0.05)

    return script


def then_close(data: bytes) -> Script:
    def script(peer: Peer) -> None:
        peer.send(data)
        peer.sock.close()

    return script


def then_stall(data: bytes) -> Script:
    def script(peer: Peer) -> None:
        peer.send(data)
        peer.hold()

    return script


def sized(body: bytes, headers: bytes = b"") -> bytes:
    """A 200 response framed by Content-Length."""
    return b"HTTP/1.1 200 OK\r\n%bContent-Length: %d\r\n\r\n%b" % (headers, len(body), body)


def host_line(server: RawServer) -> bytes:
    return b"Host: 127.0.0.1:%d\r\n" % server.port


def fetch(pool: UpstreamPool, method: str = "GET", target: str = "/") -> tuple[int, bytes]:
    resp = pool.request(method, target, {}, None)
    return resp.status, resp.read()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    """Starts RawServers; stops them all and checks none of their scripts failed."""
    servers: list[RawServer] = []

    def start(script: Script, tls: ssl.SSLContext | None = None) -> RawServer:
        server = RawServer(script, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
    assert [ex for server in servers for ex in server.errors] == []


@pytest.fixture
def connect() -> Iterator[Callable[..., UpstreamPool]]:
    """Makes UpstreamPools (2 s timeouts unless told) and closes them at the end."""
    pools: list[UpstreamPool] = []

    def make(
        url: str,
        *,
        read_timeout: float = 2.0,
        max_idle: int = 4,
        ssl_context: ssl.SSLContext | None = None,
    ) -> UpstreamPool:
        pool = UpstreamPool(url, 2.0, read_timeout, max_idle, ssl_context=ssl_context)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def upstream(
    serve: Callable[..., RawServer], connect: Callable[..., UpstreamPool]
) -> Callable[..., tuple[RawServer, UpstreamPool]]:
    """A server answering with the given steps in turn, and a pool for it."""

    def start(*steps: Step, **pool_options: float) -> tuple[RawServer, UpstreamPool]:
        server = serve(replies(*steps))
        return server, connect(server.url, **pool_options)

    return start


# --- Body framing and keep-alive -------------------------------------------------------


def test_content_length_body_keeps_header_order_and_duplicates_and_reuses_connection(upstream):
    response = (
        b"HTTP/1.1 201 Created\r\n"
        b"Content-Type: text/plain\r\n"
        b"Set-Cookie: a=1\r\n"
        b"X-Empty:\r\n"
        b"set-cookie: b=2\r\n"
        b"X-Spaces: \t padded \t\r\n"
        b"Content-Length: 5\r\n"
        b"\r\n"
        b"hello"
    )
    server, pool = upstream(response, OK)

    resp = pool.request("GET", "/", {}, None)

    assert resp.status == 201
    assert resp.headers == [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("X-Empty", ""),
        ("set-cookie", "b=2"),
        ("X-Spaces", "padded"),
        ("Content-Length", "5"),
    ]
    assert resp.get("set-cookie") == "a=1"
    assert resp.read() == b"hello"
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1
    assert len(server.requests) == 2


def test_body_split_across_several_sends_is_joined_and_connection_reused(upstream):
    pieces = in_pieces(b"HTTP/1.1 200 OK\r\nContent-", b"Length: 11\r\n\r\nhel", b"lo wo", b"rld")
    server, pool = upstream(pieces, OK)

    assert fetch(pool) == (200, b"hello world")
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(sized(b"bye", b"Connection: close\r\n"), id="connection-close"),
        pytest.param(sized(b"bye", b"Connection: Keep-Alive, CLOSE\r\n"), id="close-in-list"),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye", id="http-1.0"),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nbye",
            id="http-1.0-keep-alive",
        ),
    ],
)
def test_response_that_ends_the_connection_is_not_reused(upstream, response: bytes):
    # The server would answer a second request on that connection; the client must not ask.
    server, pool = upstream(response, OK)

    assert fetch(pool) == (200, b"bye")
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


def test_chunked_body_with_extensions_uppercase_hex_and_trailers(upstream):
    response = (
        b"HTTP/1.1 200 OK\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"X-After: 1\r\n"
        b"\r\n"
        b"5;name=value\r\n"
        b"hello\r\n"
        b'1A ; quoted="a;b"\r\n'
        b"abcdefghijklmnopqrstuvwxyz\r\n"
        b"0;last\r\n"
        b"X-Checksum: abc\r\n"
        b"X-More: 1\r\n"
        b"\r\n"
    )
    server, pool = upstream(response, OK)

    resp = pool.request("GET", "/", {}, None)

    assert resp.headers == [("Transfer-Encoding", "chunked"), ("X-After", "1")]
    assert resp.read() == b"hello" + b"abcdefghijklmnopqrstuvwxyz"
    assert resp.get("x-checksum") is None
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


def test_chunked_body_split_inside_sizes_and_data(upstream):
    pieces = in_pieces(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1",
        b"0\r\n0123456",
        b"789abcdef\r",
        b"\n0\r\n",
        b"\r\n",
    )
    server, pool = upstream(pieces, OK)

    assert fetch(pool) == (200, b"0123456789abcdef")
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


@pytest.mark.parametrize("size_line", [b"zz", b"-5", b"0x5", b"", b"5 5", b"+5"])
def test_invalid_chunk_size_is_bad_response(upstream, size_line: bytes):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, pool = upstream(chunked + size_line + b"\r\nhello\r\n0\r\n\r\n")

    resp = pool.request("GET", "/", {}, None)

    assert resp.status == 200
    with pytest.raises(BadResponse):
        resp.read()


def test_chunk_data_longer_than_its_size_is_bad_response(upstream):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, pool = upstream(chunked + b"5\r\nhelloEXTRA\r\n0\r\n\r\n")

    resp = pool.request("GET", "/", {}, None)

    with pytest.raises(BadResponse):
        resp.read()


def test_chunked_body_cut_before_last_chunk_is_bad_response(upstream):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, pool = upstream(then_close(chunked + b"5\r\nhello\r\n"))

    resp = pool.request("GET", "/", {}, None)

    with pytest.raises(BadResponse):
        resp.read()


def test_body_until_close_is_read_whole_and_connection_not_reused(upstream):
    server, pool = upstream(then_close(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nall of it"), OK)

    resp = pool.request("GET", "/", {}, None)

    assert resp.headers == [("X-A", "1")]
    assert resp.read() == b"all of it"
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


def test_transfer_encoding_with_content_length_uses_chunked_and_is_not_reused(upstream):
    response = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    server, pool = upstream(response, OK)

    assert fetch(pool) == (200, b"hello")
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


def test_transfer_encoding_not_ending_in_chunked_reads_until_close(upstream):
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nraw bytes"
    server, pool = upstream(then_close(response), OK)

    assert fetch(pool) == (200, b"raw bytes")
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


@pytest.mark.parametrize(
    "lengths",
    [
        pytest.param(b"Content-Length: 5\r\nContent-Length: 6\r\n", id="two-fields"),
        pytest.param(b"Content-Length: 5, 6\r\n", id="one-list"),
        pytest.param(b"Content-Length: 5,\r\n", id="trailing-comma"),
    ],
)
def test_conflicting_content_lengths_are_bad_response(upstream, lengths: bytes):
    _, pool = upstream(b"HTTP/1.1 200 OK\r\n" + lengths + b"\r\nhello!")

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


@pytest.mark.parametrize(
    "lengths",
    [
        pytest.param(b"Content-Length: 5\r\nContent-Length: 5\r\n", id="two-fields"),
        pytest.param(b"Content-Length: 5, 5\r\n", id="one-list"),
    ],
)
def test_repeated_identical_content_length_is_accepted(upstream, lengths: bytes):
    server, pool = upstream(b"HTTP/1.1 200 OK\r\n" + lengths + b"\r\nhello", OK)

    assert fetch(pool) == (200, b"hello")
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


@pytest.mark.parametrize(
    "value", [b"abc", b"-5", b"+5", b"5.0", b"0x5", b"1e3", b"", "\uff15".encode()]
)
def test_non_numeric_content_length_is_bad_response(upstream, value: bytes):
    _, pool = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nhello")

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


def test_head_response_has_no_body_despite_content_length_and_is_reused(upstream):
    server, pool = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", OK)

    resp = pool.request("HEAD", "/", {}, None)

    assert resp.headers == [("Content-Length", "1234")]
    assert resp.read() == b""
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", id="204"),
        pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", id="304"),
        pytest.param(b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", id="204-te"),
    ],
)
def test_204_and_304_have_no_body_and_are_reused(upstream, response: bytes):
    server, pool = upstream(response, OK)

    status, body = fetch(pool)

    assert (status, body) == (int(response[9:12]), b"")
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


# --- Status line and header parsing ----------------------------------------------------


def test_100_continue_and_103_early_hints_are_skipped(upstream):
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Final: 1\r\n\r\nbody"
    )
    server, pool = upstream(response, OK)

    resp = pool.request("POST", "/", {"Content-Length": "1"}, b"x")

    assert resp.status == 200
    assert resp.headers == [("Content-Length", "4"), ("X-Final", "1")]
    assert resp.read() == b"body"
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


def test_interim_response_in_its_own_segment_is_skipped(upstream):
    pieces = in_pieces(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\n", OK[17:])
    server, pool = upstream(pieces, OK)

    assert fetch(pool) == (200, b"ok")
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


def test_101_switching_protocols_is_bad_response(upstream):
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    _, pool = upstream(response)

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


def test_bare_lf_line_endings_are_accepted(upstream):
    server, pool = upstream(b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nhi", OK)

    resp = pool.request("GET", "/", {}, None)

    assert resp.headers == [("X-A", "1"), ("Content-Length", "2")]
    assert resp.read() == b"hi"
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


def test_obs_fold_continuation_lines_are_joined_with_a_space(upstream):
    response = (
        b"HTTP/1.1 200 OK\r\nX-Folded: first\r\n   second\r\n\tthird\r\nContent-Length: 0\r\n\r\n"
    )
    _, pool = upstream(response)

    resp = pool.request("GET", "/", {}, None)

    assert resp.headers == [("X-Folded", "first second third"), ("Content-Length", "0")]


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"X-No-Colon", id="no-colon"),
        pytest.param(b"X-Space : v", id="space-before-colon"),
        pytest.param(b": no name", id="empty-name"),
        pytest.param(b"X(bad): v", id="not-a-token"),
    ],
)
def test_invalid_header_line_is_bad_response(upstream, line: bytes):
    _, pool = upstream(b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n")

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


def test_folded_line_before_any_header_is_bad_response(upstream):
    _, pool = upstream(b"HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 0\r\n\r\n")

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 abc OK",
        b"HTTP/1.1 200\tOK",
        b"HTTP/2 200 OK",
        b"HTTP/1.2 200 OK",
        b"http/1.1 200 OK",
        b"ICY 200 OK",
        b"",
    ],
)
def test_invalid_status_line_is_bad_response(upstream, status_line: bytes):
    _, pool = upstream(status_line + b"\r\nContent-Length: 0\r\n\r\n")

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


def test_status_line_without_reason_is_accepted(upstream):
    _, pool = upstream(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")

    assert fetch(pool) == (200, b"ok")


@pytest.mark.parametrize("code", [b"000", b"099", b"600", b"999"])
def test_status_code_outside_100_to_599_is_bad_response(upstream, code: bytes):
    _, pool = upstream(b"HTTP/1.1 " + code + b" Odd\r\nContent-Length: 0\r\n\r\n")

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


def _fields(count: int, size: int = 10) -> bytes:
    return b"".join(b"X-F%d: %b\r\n" % (i, b"v" * size) for i in range(count))


def test_header_block_over_64_kib_is_bad_response(upstream):
    _, pool = upstream(b"HTTP/1.1 200 OK\r\n" + _fields(50, 4000) + b"Content-Length: 0\r\n\r\n")

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


def test_header_block_just_over_64_kib_is_bad_response_however_it_arrives(upstream):
    head = b"HTTP/1.1 200 OK\r\n" + _fields(66, 1000) + b"Content-Length: 0\r\n\r\n"
    assert 65 * 1024 < len(head) < 70 * 1024
    # 60000 bytes first: under the limit, so the client reads on and finds the end at once.
    _, pool = upstream(in_pieces(head[:60000], head[60000:]))

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


def test_100_header_fields_are_accepted_and_101_are_not(upstream):
    _, pool = upstream(
        b"HTTP/1.1 200 OK\r\n" + _fields(99) + b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + _fields(100) + b"Content-Length: 0\r\n\r\n",
    )

    assert len(pool.request("GET", "/", {}, None).headers) == 100
    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


@pytest.mark.parametrize("value", [b"a\x00b", b"a\rb"])
def test_nul_or_bare_cr_in_response_header_is_bad_response(upstream, value: bytes):
    _, pool = upstream(b"HTTP/1.1 200 OK\r\nX-Odd: " + value + b"\r\nContent-Length: 0\r\n\r\n")

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


# --- Failures: which exception, and how fast -------------------------------------------


def _close_unanswered(peer: Peer) -> None:
    peer.read_request()
    peer.sock.close()


def _reset_unanswered(peer: Peer) -> None:
    peer.read_request()
    peer.reset()


@pytest.mark.parametrize("script", [_close_unanswered, _reset_unanswered], ids=["fin", "rst"])
def test_server_closing_without_answer_is_dropped(serve, connect, script: Script):
    server = serve(script)
    pool = connect(server.url)

    with pytest.raises(Dropped):
        pool.request("GET", "/", {}, None)
    assert len(server.requests) == 1


def test_nothing_listening_is_unreachable(connect):
    # A bound socket that does not listen keeps the port ours and refuses connections.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        pool = connect(f"http://127.0.0.1:{reserved.getsockname()[1]}")

        with pytest.raises(Unreachable):
            pool.request("GET", "/", {}, None)


def test_server_that_never_answers_times_out_quickly(serve, connect):
    server = serve(replies(Peer.hold))
    pool = connect(server.url, read_timeout=0.3)

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        pool.request("GET", "/", {}, None)
    assert time.monotonic() - started < 1.5


def test_head_cut_short_is_bad_response(upstream):
    _, pool = upstream(then_close(b"HTTP/1.1 200 OK\r\nContent-Len"))

    with pytest.raises(BadResponse):
        pool.request("GET", "/", {}, None)


def test_stall_inside_head_times_out(upstream):
    _, pool = upstream(then_stall(b"HTTP/1.1 200 OK\r\n"), read_timeout=0.3)

    with pytest.raises(UpstreamTimeout):
        pool.request("GET", "/", {}, None)


def test_body_shorter_than_content_length_is_bad_response(upstream):
    server, pool = upstream(then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfour"), OK)

    resp = pool.request("GET", "/", {}, None)

    with pytest.raises(BadResponse):
        resp.read()
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


def test_stall_mid_body_times_out_and_connection_is_dropped(upstream):
    server, pool = upstream(
        then_stall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfour"), OK, read_timeout=0.3
    )

    resp = pool.request("GET", "/", {}, None)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        resp.read()
    assert time.monotonic() - started < 1.5
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


def test_idle_connection_closed_by_server_is_replaced_without_error(upstream):
    closed = threading.Event()

    def answer_then_close(peer: Peer) -> None:
        peer.send(OK)
        peer.sock.close()
        closed.set()

    server, pool = upstream(answer_then_close, OK)

    assert fetch(pool) == (200, b"ok")
    assert closed.wait(WAIT)
    time.sleep(0.05)  # let the FIN reach the client's socket
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


def test_unsolicited_bytes_after_a_response_prevent_reuse(upstream):
    server, pool = upstream(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate", sized(b"2nd"))

    assert fetch(pool) == (200, b"ok")
    assert fetch(pool) == (200, b"2nd")
    assert server.accepted == 2


def test_unsolicited_bytes_arriving_while_idle_prevent_reuse(upstream):
    sent = threading.Event()

    def answer_then_chatter(peer: Peer) -> None:
        peer.send(OK)
        time.sleep(0.1)
        peer.send(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        sent.set()
        peer.hold()

    server, pool = upstream(answer_then_chatter, sized(b"2nd"))

    assert fetch(pool) == (200, b"ok")
    assert sent.wait(WAIT)
    time.sleep(0.05)
    assert fetch(pool) == (200, b"2nd")
    assert server.accepted == 2


# --- Request encoding ------------------------------------------------------------------


def test_request_goes_out_exactly_as_given(upstream):
    server, pool = upstream(OK)
    headers = {"Content-Type": "application/json", "X-B": "2", "x-a": "1", "Content-Length": "7"}

    pool.request("POST", "/a/b%2F?x=1&y=%20&x=2", headers, b'{"k":1}').read()

    assert server.requests == [
        b"POST /a/b%2F?x=1&y=%20&x=2 HTTP/1.1\r\n"
        + host_line(server)
        + b"Content-Type: application/json\r\n"
        b"X-B: 2\r\n"
        b"x-a: 1\r\n"
        b"Content-Length: 7\r\n"
        b"\r\n"
        b'{"k":1}'
    ]


def test_host_header_is_the_base_urls_host_and_port_only(serve, connect):
    server = serve(replies(OK))
    pool = connect(f"http://user:secret@127.0.0.1:{server.port}/prefix/")

    fetch(pool, target="/prefix/x")

    assert server.requests == [b"GET /prefix/x HTTP/1.1\r\n" + host_line(server) + b"\r\n"]


def test_latin_1_header_value_is_sent_as_one_byte(upstream):
    server, pool = upstream(OK)

    pool.request("GET", "/", {"X-Name": "caf\u00e9"}, None).read()

    assert b"\r\nX-Name: caf\xe9\r\n" in server.requests[0]


@pytest.mark.parametrize(
    ("target", "headers", "method"),
    [
        pytest.param("/", {"X-A": "a\r\nX-Injected: 1"}, "GET", id="crlf-in-value"),
        pytest.param("/", {"X-A": "a\nb"}, "GET", id="lf-in-value"),
        pytest.param("/", {"X-A": "a\rb"}, "GET", id="cr-in-value"),
        pytest.param("/", {"X-A": "a\x00b"}, "GET", id="nul-in-value"),
        pytest.param("/", {"X-A": "snow\u2603man"}, "GET", id="non-latin-1-value"),
        pytest.param("/", {"X A": "v"}, "GET", id="space-in-name"),
        pytest.param("/", {"X-A:": "v"}, "GET", id="colon-in-name"),
        pytest.param("/", {"": "v"}, "GET", id="empty-name"),
        pytest.param("/a b", {}, "GET", id="space-in-target"),
        pytest.param("/a\tb", {}, "GET", id="tab-in-target"),
        pytest.param("/a\r\nX: y", {}, "GET", id="crlf-in-target"),
        pytest.param("/a\x00", {}, "GET", id="nul-in-target"),
        pytest.param("/a\x7f", {}, "GET", id="del-in-target"),
        pytest.param("/\u2603", {}, "GET", id="non-latin-1-target"),
        pytest.param("/", {}, "GET /x", id="space-in-method"),
        pytest.param("/", {}, "", id="empty-method"),
    ],
)
def test_unsendable_request_is_invalid_and_nothing_is_sent(
    upstream, target: str, headers: dict[str, str], method: str
):
    server, pool = upstream(OK, OK)
    assert fetch(pool) == (200, b"ok")

    with pytest.raises(InvalidRequest):
        pool.request(method, target, headers, None)

    # The pooled connection carried nothing and still serves the next request.
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1
    assert server.requests == [BARE_GET % server.port] * 2


def test_empty_target_is_invalid(upstream):
    server, pool = upstream(OK)

    with pytest.raises(InvalidRequest):
        pool.request("GET", "", {}, None)
    assert server.requests == []


def test_invalid_request_on_a_fresh_pool_opens_no_connection(upstream):
    server, pool = upstream(OK)

    with pytest.raises(InvalidRequest):
        pool.request("GET", "/", {"X-A": "a\r\nb"}, None)
    time.sleep(0.05)
    assert server.accepted == 0


@pytest.mark.parametrize("size", [64 * 1024, 64 * 1024 + 1, 1024 * 1024])
def test_large_request_body_arrives_intact(upstream, size: int):
    server, pool = upstream(OK, OK)
    body = os.urandom(size)

    resp = pool.request("PUT", "/big", {"Content-Length": str(size)}, body)

    assert (resp.status, resp.read()) == (200, b"ok")
    assert server.requests[0].endswith(b"\r\nContent-Length: %d\r\n\r\n" % size + body)
    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 1


# --- Pool size and streaming ------------------------------------------------------------


@pytest.mark.parametrize(("max_idle", "connections"), [(1, 3), (2, 2)])
def test_pool_keeps_at_most_max_idle_connections(upstream, max_idle: int, connections: int):
    server, pool = upstream(*[OK] * 4, max_idle=max_idle)

    # Two exchanges at once need two connections; both are released afterwards.
    first, second = pool.request("GET", "/", {}, None), pool.request("GET", "/", {}, None)
    assert (first.read(), second.read()) == (b"ok", b"ok")
    assert server.accepted == 2
    # Two at once again: only what the pool kept is reused.
    third, fourth = pool.request("GET", "/", {}, None), pool.request("GET", "/", {}, None)
    assert (third.read(), fourth.read()) == (b"ok", b"ok")
    assert server.accepted == connections


BODY = bytes(range(256)) * 4


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(sized(BODY), id="content-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"300\r\n"
            + BODY[:768]
            + b"\r\n100\r\n"
            + BODY[768:]
            + b"\r\n0\r\n\r\n",
            id="chunked",
        ),
        pytest.param(then_close(b"HTTP/1.1 200 OK\r\n\r\n" + BODY), id="until-close"),
    ],
)
def test_stream_yields_pieces_no_longer_than_asked(upstream, step: Step):
    _, pool = upstream(step)

    pieces = list(pool.request("GET", "/", {}, None).stream(100))

    assert b"".join(pieces) == BODY
    assert max(len(piece) for piece in pieces) == 100
    assert all(pieces)


def test_half_read_body_then_close_is_not_reused(upstream):
    server, pool = upstream(sized(BODY), OK)

    resp = pool.request("GET", "/", {}, None)
    assert next(resp.stream(10)) == BODY[:10]
    resp.close()

    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


def test_body_cannot_be_read_twice(upstream):
    _, pool = upstream(OK)

    resp = pool.request("GET", "/", {}, None)
    assert resp.read() == b"ok"
    with pytest.raises(BadResponse):
        resp.read()


def test_release_before_the_body_arrived_does_not_pool_the_connection(serve, connect):
    def head_now_body_later(peer: Peer) -> None:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        if peer.read_request() is not None:  # the client reused this connection
            peer.send(b"hello" + OK)

    server = serve(replies(head_now_body_later, OK))
    pool = connect(server.url)

    pool.request("GET", "/", {}, None).release()

    assert fetch(pool) == (200, b"ok")
    assert server.accepted == 2


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for IP 127.0.0.1 and its key, both PEM."""
    return self_signed_certificate()


@pytest.fixture
def tls_server(
    serve: Callable[..., RawServer], certificate: tuple[bytes, bytes], tmp_path
) -> RawServer:
    cert_pem, key_pem = certificate
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return serve(replies(sized(b"secret"), OK), tls=context)


def test_tls_with_a_trusting_context_works_and_reuses_the_connection(
    tls_server: RawServer, connect, certificate: tuple[bytes, bytes]
):
    context = ssl.create_default_context(cadata=certificate[0].decode())
    pool = connect(tls_server.url, ssl_context=context)

    assert fetch(pool) == (200, b"secret")
    assert fetch(pool) == (200, b"ok")
    assert tls_server.accepted == 1
    assert tls_server.requests[0] == BARE_GET % tls_server.port


def test_tls_default_context_refuses_a_self_signed_certificate(tls_server: RawServer, connect):
    pool = connect(tls_server.url)

    with pytest.raises(Unreachable):
        pool.request("GET", "/", {}, None)
    assert tls_server.requests == []
