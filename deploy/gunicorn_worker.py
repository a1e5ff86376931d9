"""Both services' gunicorn worker: gthread, with three changes. The one module that
relies on gunicorn's internals.

1. Keep-alive served in place (PERF). Stock gthread hands every keep-alive request across
two threads: the main loop polls the socket, queues it to a pool thread, and the pool
thread passes it back through a pipe when done. On one connection that costs ~0.3 ms per
request here. When this thread is the worker's only busy one, it instead waits up to
LINGER_MS for the client's next request and serves it directly. Under load (more than one
request in flight) nothing changes: the connection goes back to the poller as before, so
no connection can keep a thread from the others for longer than LINGER_MS, and only while
there is no other work.

2. Problem pages. A request gunicorn itself refuses (a malformed request line or header,
one over the size limits) never reaches either app, and gunicorn answers it with an HTML
page. Every error we send is application/problem+json with a request id (README, "Every
error is application/problem+json"), so the worker answers those with a problem document
of its status's registered type instead: same status and message.

3. No version banner (SECURITY). gunicorn writes `Server: gunicorn` on every response and
no setting turns it off; its Response reads a module global per response, so a neutral
name there replaces it (an app-set Server header would be sent in addition, not instead).

4. Slow clients cost no thread (SECURITY). Stock gthread gives a connection a pool thread
as soon as its first byte arrives, and that thread then reads the rest of the request head
(and body) blocking: two workers' 16 threads are held by 16 clients sending one byte a
second. Here a request is read without blocking, as its bytes arrive, until its head and a
body of up to BUFFERED_BODY_BYTES are in; only then does a thread parse and serve it.
Meanwhile the connection waits in the poller, and one that has not sent a whole request
within CLIENT_TIMEOUT_SECONDS of its first byte is closed.

5. Restarts reset nobody (RELIABILITY). With reuse_port each worker has its own listening
socket. Stock gthread keeps a stopping worker's socket open while it drains, so the
kernel keeps queueing connections there, and closing it at the end resets them all. Here
a stopping worker closes its socket as it stops accepting, so new connections go to the
workers that still serve (a new worker listens from its fork on, as gunicorn makes it, and
answers what queued once its app is loaded; listening only after the load would leave a
gap with no listener at all during a SIGHUP, which the rolling-restart drill showed).

What these rely on, none of it gunicorn's public API, is listed in `missing_internals`
and checked once when gunicorn loads this module. If a gunicorn upgrade removed any of
it, or AUTHGATE_GUNICORN_STOCK=1 is set, the worker runs as stock gthread and says so in
one warning line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import socket
import threading
import time
import uuid
from http import HTTPStatus
from types import ModuleType
from typing import Any

import gunicorn
from gunicorn import util
from gunicorn.http import parser as gunicorn_parser
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

from authgate_common.problem_types import ProblemType, problem_document

# A client on the same host answers within tens of microseconds; one that takes longer
# goes back to the poller like any other.
LINGER_MS = 2
# gunicorn's messages quote the offending request line or header; keep the quote short.
_DETAIL_LIMIT = 256
SERVER_NAME = "authgate"
# A request whose head (and small body) has not fully arrived this long after its first
# byte is dropped. Request bodies above BUFFERED_BODY_BYTES are read by a thread as usual.
CLIENT_TIMEOUT_SECONDS = float(os.environ.get("AUTHGATE_CLIENT_TIMEOUT_SECONDS", "10"))
BUFFERED_BODY_BYTES = 128 * 1024
# Past this many bytes without the end of the head, gunicorn's parser refuses it (431).
_HEAD_LIMIT = 64 * 1024
_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,18})[ \t]*\r\n", re.IGNORECASE)
_STREAMED = re.compile(rb"\r\n(?:transfer-encoding|expect):", re.IGNORECASE)
# Set to 1 to run stock gthread (what an upgrade that breaks the internals falls back to).
STOCK_SWITCH = "AUTHGATE_GUNICORN_STOCK"


def missing_internals(
    util_module: ModuleType,
    wsgi_module: ModuleType,
    parser_module: ModuleType,
    gthread_module: ModuleType = gthread,
) -> list[str]:
    """The gunicorn internals this module relies on that are absent (empty: all there)."""
    missing = []
    for name in ("write_error", "write_nonblock"):
        if not callable(getattr(util_module, name, None)):
            missing.append(f"gunicorn.util.{name}")
    if not isinstance(getattr(wsgi_module, "SERVER", None), str):
        missing.append("gunicorn.http.wsgi.SERVER")
    if not hasattr(gthread_module, "_DEFER"):
        missing.append("gunicorn.workers.gthread._DEFER")
    try:
        # The keep-alive loop peeks at the bytes the parser read but has not used yet.
        probe = parser_module.RequestParser(None, iter(()), None)
        probe.unreader.buf.getvalue()
    except Exception:  # NOTE: whatever fails, the internals are not the ones we know
        missing.append("gunicorn.http.parser.RequestParser().unreader.buf")
    return missing


def _internals_usable() -> bool:
    """Check once, in the master as gunicorn loads the worker class; warn once if not."""
    log = logging.getLogger("gunicorn.error")
    if os.environ.get(STOCK_SWITCH, "").strip() == "1":
        log.warning("%s=1: running stock gthread workers", STOCK_SWITCH)
        return False
    missing = missing_internals(util, gunicorn_wsgi, gunicorn_parser)
    if missing:
        log.warning(
            "gunicorn %s lacks %s: running stock gthread workers (no keep-alive in place, "
            "HTML error pages, Server: gunicorn)",
            gunicorn.__version__,
            ", ".join(missing),
        )
        return False
    return True


INTERNALS_USABLE = _internals_usable()


class KeepAliveThreadWorker(ThreadWorker):
    """gthread, plus: keep-alive in place, problem+json pages, no banner, slow clients
    held by no thread, and restarts that refuse no connection (see the module)."""

    sockets: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As ThreadWorker, with a count of requests in flight."""
        super().__init__(*args, **kwargs)
        self._busy_lock = threading.Lock()
        self._busy = 0

    def init_process(self) -> None:
        """Answer gunicorn's own errors as problem+json and drop the banner, then run."""
        if INTERNALS_USABLE:
            # NOTE: gunicorn writes every error page through this one function and reads
            # SERVER per response, both looked up at call time.
            util.write_error = write_problem
            gunicorn_wsgi.SERVER = SERVER_NAME
        super().init_process()

    def set_accept_enabled(self, enabled: bool) -> None:
        """As gthread; a stopping worker also closes its own sockets straight away."""
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive and INTERNALS_USABLE and _own_sockets(self.cfg):
            # NOTE: open, its socket would keep taking connections while the worker drains,
            # and reset them all when it finally closes; closed, they go to live workers.
            for listener in self.sockets:
                listener.close()
            self.sockets = []

    def handle(self, conn: Any) -> Any:
        """Serve requests on `conn` while it is the only busy one and its client keeps up."""
        with self._busy_lock:
            self._busy += 1
        try:
            while True:
                if INTERNALS_USABLE and not self._request_arrived(conn):
                    # Back to the poller, or closed if the client is too slow.
                    return False if _too_slow(conn) else gthread._DEFER
                result = super().handle(conn)
                # True means "keep alive": anything else is the caller's to finish.
                if result is not True or not self.alive or self._busy > 1:
                    return result
                if not INTERNALS_USABLE:
                    return result
                if not conn.parser.unreader.buf.getvalue() and not _readable(conn.sock):
                    return result
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _request_arrived(self, conn: Any) -> bool:
        """Read what has arrived without blocking; True once a whole request is in hand.

        The bytes are handed to gunicorn's parser (its unreader), which parses them as if
        it had read them from the socket itself.
        """
        if self.cfg.is_ssl or (conn.parser is not None and conn.parser.unreader.buf.getvalue()):
            return True  # TLS is gunicorn's to read; buffered bytes are the parser's
        pending: bytearray = conn.__dict__.setdefault("authgate_pending", bytearray())
        closed = False
        conn.sock.setblocking(False)
        try:
            while not _whole_request(pending):
                chunk = conn.sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                if not pending:
                    conn.authgate_started = time.monotonic()
                pending += chunk
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            closed = True
        finally:
            conn.sock.setblocking(True)
        if closed and not pending:
            return True  # gunicorn sees the closed connection and ends it
        if not conn.initialized:
            conn.init()
        conn.parser.unreader.unread(bytes(pending))
        pending.clear()
        conn.data_ready = True
        return True


def _own_sockets(cfg: Any) -> bool:
    """Whether each worker listens on a socket of its own (gunicorn's reuse_port mode)."""
    return bool(cfg.reuse_port) and hasattr(socket, "SO_REUSEPORT")


def _whole_request(pending: bytearray) -> bool:
    """Whether `pending` holds a request head and its body (when small and sized)."""
    end = pending.find(_HEAD_END)
    if end < 0:
        return len(pending) > _HEAD_LIMIT  # gunicorn's parser refuses it
    head = bytes(pending[: end + 2])
    if _STREAMED.search(head):
        return True  # a chunked body, or a client waiting for 100 Continue: read on demand
    length = _CONTENT_LENGTH.search(head)
    if length is None:
        return True
    size = int(length.group(1))
    return size > BUFFERED_BODY_BYTES or len(pending) >= end + 4 + size


def _too_slow(conn: Any) -> bool:
    started: float | None = conn.__dict__.get("authgate_started")
    return started is not None and time.monotonic() - started > CLIENT_TIMEOUT_SECONDS


def _readable(sock: Any) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(LINGER_MS))


def write_problem(sock: Any, status: int, reason: str, message: str) -> None:
    """gunicorn's error page, as an RFC 9457 problem of its status's type, with a request id."""
    request_id = uuid.uuid4().hex
    problem_type = ProblemType.for_status(status)
    # NOTE: a status the contract does not know (a newer gunicorn) is answered as a 500.
    detail = message[:_DETAIL_LIMIT] if message and problem_type.status == status else None
    problem = problem_document(problem_type, detail=detail, request_id=request_id)
    body = json.dumps(problem, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {problem['status']} {HTTPStatus(problem['status']).phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n"
        "\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
