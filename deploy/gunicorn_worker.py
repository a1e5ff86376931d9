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

What these rely on, none of it gunicorn's public API, is listed in `missing_internals`
and checked once when gunicorn loads this module. If a gunicorn upgrade removed any of
it, or AUTHGATE_GUNICORN_STOCK=1 is set, the worker runs as stock gthread and says so in
one warning line.
"""

from __future__ import annotations

import json
import logging
import os
import select
import threading
import uuid
from http import HTTPStatus
from types import ModuleType
from typing import Any

import gunicorn
from gunicorn import util
from gunicorn.http import parser as gunicorn_parser
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers.gthread import ThreadWorker

from authgate_common.problem_types import ProblemType, problem_document

# A client on the same host answers within tens of microseconds; one that takes longer
# goes back to the poller like any other.
LINGER_MS = 2
# gunicorn's messages quote the offending request line or header; keep the quote short.
_DETAIL_LIMIT = 256
SERVER_NAME = "authgate"
# Set to 1 to run stock gthread (what an upgrade that breaks the internals falls back to).
STOCK_SWITCH = "AUTHGATE_GUNICORN_STOCK"


def missing_internals(
    util_module: ModuleType, wsgi_module: ModuleType, parser_module: ModuleType
) -> list[str]:
    """The gunicorn internals this module relies on that are absent (empty: all there)."""
    missing = []
    for name in ("write_error", "write_nonblock"):
        if not callable(getattr(util_module, name, None)):
            missing.append(f"gunicorn.util.{name}")
    if not isinstance(getattr(wsgi_module, "SERVER", None), str):
        missing.append("gunicorn.http.wsgi.SERVER")
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
    """gthread, plus: keep-alive served in place when idle, and problem+json error pages."""

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

    def handle(self, conn: Any) -> Any:
        """Serve requests on `conn` while it is the only busy one and its client keeps up."""
        with self._busy_lock:
            self._busy += 1
        try:
            while True:
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
