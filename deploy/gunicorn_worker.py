"""Both services' gunicorn worker: gthread, serving a busy keep-alive connection in place.

PERF: stock gthread hands every keep-alive request across two threads: the main loop
polls the socket, queues it to a pool thread, and the pool thread passes it back through a
pipe when done. On one connection that costs ~0.3 ms per request here: a third of the 1 ms
the gateway may add (bench/gateway_bench.py), and GET /auth/me on the auth service went
from 1.85 to 1.37 ms at p50. When this thread is the worker's only busy one, it instead
waits up to LINGER_MS for the client's next request and serves it directly.
Under load (more than one request in flight) nothing changes: the connection goes back to
the poller as before, so no connection can keep a thread from the others for longer than
LINGER, and only while there is no other work.
"""

from __future__ import annotations

import select
import threading
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

# A client on the same host answers within tens of microseconds; one that takes longer
# goes back to the poller like any other.
LINGER_MS = 2


class KeepAliveThreadWorker(ThreadWorker):
    """gthread, plus: an otherwise idle worker serves a keep-alive client's next request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As ThreadWorker, with a count of requests in flight."""
        super().__init__(*args, **kwargs)
        self._busy_lock = threading.Lock()
        self._busy = 0

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
