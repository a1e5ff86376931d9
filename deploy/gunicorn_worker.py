"""Both services' gunicorn worker: gthread, with two changes.

1. Keep-alive served in place (PERF). Stock gthread hands every keep-alive request across
two threads: the main loop polls the socket, queues it to a pool thread, and the pool
thread passes it back through a pipe when done. On one connection that costs ~0.3 ms per
request here: a third of the 1 ms the gateway may add (bench/gateway_bench.py), and GET
/auth/me on the auth service went from 1.85 to 1.37 ms at p50. When this thread is the
worker's only busy one, it instead waits up to LINGER_MS for the client's next request and
serves it directly. Under load (more than one request in flight) nothing changes: the
connection goes back to the poller as before, so no connection can keep a thread from the
others for longer than LINGER_MS, and only while there is no other work.

2. Problem pages. A request gunicorn itself refuses (a malformed request line or header,
one over the size limits) never reaches either app, and gunicorn answers it with an HTML
page. Every error we send is application/problem+json with a request id (README, "Every
error is application/problem+json"), so the worker answers those with a problem document
of its status's registered type instead: same status and message.
"""

from __future__ import annotations

import json
import select
import threading
import uuid
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from authgate_common.problem_types import ProblemType, problem_document

# A client on the same host answers within tens of microseconds; one that takes longer
# goes back to the poller like any other.
LINGER_MS = 2
# gunicorn's messages quote the offending request line or header; keep the quote short.
_DETAIL_LIMIT = 256


class KeepAliveThreadWorker(ThreadWorker):
    """gthread, plus: keep-alive served in place when idle, and problem+json error pages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As ThreadWorker, with a count of requests in flight."""
        super().__init__(*args, **kwargs)
        self._busy_lock = threading.Lock()
        self._busy = 0

    def init_process(self) -> None:
        """Answer gunicorn's own errors as problem+json in this worker, then run it."""
        # NOTE: gunicorn writes every error page through this one function, looked up at
        # call time; tests/gateway/test_gateway_worker.py catches an upgrade that changes it.
        util.write_error = write_problem
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
