"""The gateway's HTTP/1.1 client for its upstreams: keep-alive pools, one exchange per call.

PERF: the latency the gateway may add is 1 ms (issue 3). A pooled urllib3 exchange (the
transport under requests.Session) costs ~0.22 ms of CPU for a small proxied GET on this
machine, mostly work a reverse proxy does not need: URL re-parsing and re-quoting, header
validation twice over, the email parser, response and retry objects. This client costs
~0.02 ms (bench/gateway_profile.py). It does what proxying needs and no more: send the
request as given (the proxy has already chosen every header), read the status and header
lines as they came, frame the body by RFC 9112 §6.3, and keep the connection only when
the response was read to its end.

Failures are told apart because the proxy answers them differently: nothing could be
connected or nothing came back (`Unreachable`, `Dropped`: safe to retry an idempotent
request), no answer in time (`UpstreamTimeout`), a broken answer (`BadResponse`), and a
request we refuse to put on the wire (`InvalidRequest`).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

# http.client's limits: a header block of at most 64 KiB and 100 fields.
MAX_HEAD = 64 * 1024
MAX_FIELDS = 100
_RECV = 64 * 1024
_ONE_SEND = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# Bytes no header value or request target may carry (RFC 9110 §5.5, RFC 9112 §3.2).
_UNSAFE_VALUE = re.compile(r"[\x00\r\n]").search
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]").search
_NO_BODY_STATUSES = frozenset({204, 304})
_MAX_INTERIM = 8


class UpstreamError(Exception):
    """An exchange with an upstream failed; the subclass says how."""


class Unreachable(UpstreamError):
    """No connection could be made, so nothing was sent."""


class Dropped(UpstreamError):
    """The connection failed before any byte of a response came back."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or answer within its timeout."""


class ConnectTimeout(UpstreamTimeout):
    """No connection within the connect timeout (a vanished address): nothing was sent."""


class BadResponse(UpstreamError):
    """The upstream's answer is not valid HTTP/1.1, or stopped part-way."""


class InvalidRequest(ValueError):
    """A header or the target cannot be sent as HTTP/1.1 (control characters)."""


class _Eof(Exception):
    """The peer closed the connection."""


class _Connection:
    """One socket and the bytes read from it but not yet consumed."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def fill(self) -> None:
        data = self.sock.recv(_RECV)
        if not data:
            raise _Eof
        self.buf += data

    def read_head(self) -> list[bytes]:
        """The status line and header lines of the next message (line ends removed)."""
        while True:
            # A recipient may accept a bare LF as a line end (RFC 9112 §2.2).
            end = self.buf.find(b"\n\r\n")
            skip = 3
            bare = self.buf.find(b"\n\n")
            if bare >= 0 and (end < 0 or bare < end):
                end, skip = bare, 2
            if end > MAX_HEAD or (end < 0 and len(self.buf) > MAX_HEAD):
                raise BadResponse("response header block too large")
            if end >= 0:
                head = bytes(self.buf[: end + 1])  # through the last line's LF
                del self.buf[: end + skip]
                # RFC 9112 §2.2: a NUL or a CR outside a line end is refused, never relayed.
                if b"\x00" in head or head.count(b"\r") != head.count(b"\r\n"):
                    raise BadResponse("a NUL or bare CR in the response head")
                return [line.rstrip(b"\r") for line in head[:-1].split(b"\n")]
            self.fill()

    def read_line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end > MAX_HEAD or (end < 0 and len(self.buf) > MAX_HEAD):
                raise BadResponse("chunk line too long")
            if end >= 0:
                line = bytes(self.buf[:end]).rstrip(b"\r")
                del self.buf[: end + 1]
                return line
            self.fill()

    def take(self, limit: int) -> bytes:
        """Up to `limit` bytes, reading once if none are buffered."""
        if not self.buf:
            self.fill()
        data = bytes(self.buf[:limit])
        del self.buf[:limit]
        return data

    def usable(self) -> bool:
        """Idle and still open: the peer has neither closed it nor sent anything unasked."""
        if self.buf:
            return False
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        self.sock.close()


class UpstreamResponse:
    """Status and headers of an upstream's answer; the body is read on demand."""

    def __init__(
        self,
        pool: UpstreamPool,
        conn: _Connection,
        status: int,
        headers: list[tuple[str, str]],
        length: int | None,
        chunked: bool,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._conn: _Connection | None = conn
        self._length = length
        self._chunked = chunked
        self._keep_alive = keep_alive
        self._body_read = length == 0
        # The first value of each field, by lower-case name: the proxy asks for several.
        self._first: dict[str, str] = {}
        for key, value in headers:
            self._first.setdefault(key.lower(), value)

    def get(self, name: str) -> str | None:
        """The first value of a header (name in lower case), or None."""
        return self._first.get(name)

    def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        return b"".join(self.stream(_RECV))

    def stream(self, size: int) -> Iterator[bytes]:
        """The body in pieces of at most `size` bytes; pools the connection at the end."""
        conn = self._conn
        if conn is None:
            raise BadResponse("the body was already read")
        try:
            if self._chunked:
                yield from _chunked_body(conn, size)
            elif self._length is not None:
                left = self._length
                while left:
                    piece = conn.take(min(left, size))
                    left -= len(piece)
                    yield piece
            else:
                yield from _body_until_close(conn, size)
        except _Eof:
            self.close()
            raise BadResponse("the upstream closed the connection mid-body") from None
        except TimeoutError:
            self.close()
            raise UpstreamTimeout("the upstream stopped sending the body") from None
        except OSError:
            self.close()
            raise BadResponse("the connection failed mid-body") from None
        except BadResponse:
            self.close()
            raise
        self._body_read = True
        self.release()

    def release(self) -> None:
        """Pool the connection if its body was read to the end and it may be reused."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep_alive and self._body_read and not conn.buf:
            self._pool.give_back(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (a half-read body would poison the next exchange)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _chunked_body(conn: _Connection, size: int) -> Iterator[bytes]:
    while True:
        line = conn.read_line()
        digits = line.split(b";", 1)[0].strip()
        if not digits or any(c not in b"0123456789abcdefABCDEF" for c in digits):
            raise BadResponse("invalid chunk size")
        left = int(digits, 16)
        if left == 0:
            break
        while left:
            piece = conn.take(min(left, size))
            left -= len(piece)
            yield piece
        if conn.read_line():
            raise BadResponse("chunk data longer than its size")
    # Trailer fields end at an empty line; hop-by-hop by nature, so never relayed.
    for _ in range(MAX_FIELDS + 1):
        if not conn.read_line():
            return
    raise BadResponse("too many trailer fields")


def _body_until_close(conn: _Connection, size: int) -> Iterator[bytes]:
    while True:
        try:
            yield conn.take(size)
        except _Eof:
            return


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to one upstream origin, reused newest first."""

    def __init__(
        self,
        base_url: str,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` is for https upstreams; the default verifies as requests does."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._tls = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if self._tls else 80))
        self._host_header = parts.netloc.rpartition("@")[2]
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle
        # An http upstream never speaks TLS, whatever context the caller holds for others.
        self._context = (ssl_context or default_tls_context()) if self._tls else None
        self._idle: list[_Connection] = []

    def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> UpstreamResponse:
        """Send one request and read the response's status and headers."""
        message = self._encode(method, target, headers)
        if body and len(body) <= _ONE_SEND:
            message, body = message + body, None
        conn = self._idle_connection() or self._connect()
        try:
            conn.sock.sendall(message)
            if body:
                conn.sock.sendall(body)
            conn.fill()
        except TimeoutError:
            conn.close()
            raise UpstreamTimeout("no answer within the read timeout") from None
        except (_Eof, OSError):
            conn.close()
            raise Dropped("the connection closed before a response") from None
        try:
            return self._response(conn, method)
        except TimeoutError:
            conn.close()
            raise UpstreamTimeout("the response head did not arrive in time") from None
        except (_Eof, OSError):
            conn.close()
            raise BadResponse("the connection failed mid-response") from None
        except BadResponse:
            conn.close()
            raise

    def give_back(self, conn: _Connection) -> None:
        """Keep an idle connection for the next request, up to the pool's size."""
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()

    def _encode(self, method: str, target: str, headers: dict[str, str]) -> bytes:
        if not target.startswith("/") or _UNSAFE_TARGET(target) or not _TOKEN(method):
            raise InvalidRequest("the request target or method cannot be sent")
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        for name, value in headers.items():
            if not _TOKEN(name) or _UNSAFE_VALUE(value):
                raise InvalidRequest(f"header {name!r} cannot be sent")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        try:
            return "".join(lines).encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidRequest("a header is not ISO-8859-1") from None

    def _idle_connection(self) -> _Connection | None:
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return None
            if conn.usable():
                return conn
            conn.close()

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection(self._address, timeout=self._connect_timeout)
        except TimeoutError:
            raise ConnectTimeout("the connection was not accepted in time") from None
        except OSError:
            raise Unreachable("the upstream refused or could not be reached") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=self._address[0])
        except TimeoutError:
            sock.close()
            raise UpstreamTimeout("the TLS handshake did not finish in time") from None
        except OSError:
            sock.close()
            raise Unreachable("the TLS handshake failed") from None
        sock.settimeout(self._read_timeout)
        return _Connection(sock)

    def _response(self, conn: _Connection, method: str) -> UpstreamResponse:
        for _ in range(_MAX_INTERIM + 1):
            lines = conn.read_head()
            version, status = _status_line(lines[0])
            # Interim answers (100 Continue, 103 Early Hints) are the upstream's business.
            if status >= 200:
                break
            if status == 101:
                raise BadResponse("the upstream switched protocols unasked")
        else:
            raise BadResponse("too many interim responses")
        headers = _header_fields(lines[1:])
        keep_alive = version == b"HTTP/1.1"
        codings: list[str] = []
        lengths: list[str] = []
        for name, value in headers:
            lower = name.lower()
            if lower == "connection" and "close" in _tokens(value):
                keep_alive = False
            elif lower == "transfer-encoding":
                codings.extend(_tokens(value))
            elif lower == "content-length":
                lengths.append(value)
        if method == "HEAD" or status in _NO_BODY_STATUSES:
            return UpstreamResponse(self, conn, status, headers, 0, False, keep_alive)
        if codings:
            # RFC 9112 §6.3: chunked must come last, else the body runs to the close. A
            # Content-Length beside Transfer-Encoding is ignored and the connection not
            # reused (§6.1): the classic request-smuggling shape.
            chunked = codings[-1] == "chunked"
            keep_alive = keep_alive and chunked and not lengths
            return UpstreamResponse(self, conn, status, headers, None, chunked, keep_alive)
        if lengths:
            length = _content_length(lengths)
            return UpstreamResponse(self, conn, status, headers, length, False, keep_alive)
        return UpstreamResponse(self, conn, status, headers, None, False, False)


def _status_line(line: bytes) -> tuple[bytes, int]:
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not code.isdigit() or rest[3:4] not in b" ":
        raise BadResponse("invalid status line")
    status = int(code)
    if not 100 <= status <= 599:
        raise BadResponse("status code out of range")
    return version, status


def _header_fields(lines: list[bytes]) -> list[tuple[str, str]]:
    if len(lines) > MAX_FIELDS:
        raise BadResponse("too many response header fields")
    fields: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.decode("iso-8859-1")
        if line[:1] in (" ", "\t"):
            # Obsolete line folding: a proxy replaces it with a space (RFC 9112 §5.2).
            if not fields:
                raise BadResponse("a folded line before any header field")
            name, value = fields[-1]
            fields[-1] = (name, (value + " " + line.strip(" \t")).strip())
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN(name):
            raise BadResponse("an invalid response header line")
        fields.append((name, value.strip(" \t")))
    return fields


def _tokens(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",")]


def _content_length(values: list[str]) -> int:
    # Repeated identical values (or a list of them) are allowed; anything else is not.
    found = {part.strip() for value in values for part in value.split(",")}
    if len(found) != 1:
        raise BadResponse("conflicting Content-Length values")
    (text,) = found
    if not text.isdigit() or not text.isascii():
        raise BadResponse("invalid Content-Length")
    return int(text)


def default_tls_context() -> ssl.SSLContext:
    """Verify as requests does: certifi's public CA bundle."""
    import certifi  # requests' CA bundle, so an https upstream verifies as it did before

    return ssl.create_default_context(cafile=certifi.where())
