"""The gateway's transport to its upstreams: one requests.Session per upstream.

Each upstream gets a `requests.Session` with its own `HTTPAdapter` (keep-alive pool sized
to the worker's threads, TLS verified against the public bundle or
GATEWAY_UPSTREAM_CA_FILE, no environment proxies, no redirects, no cookies, no retries:
the proxy decides what may be repeated). The session is the configuration; the hot path
calls the adapter's own urllib3 pool (`urlopen`, the call `Session.send` ends in) with
`preload_content=False`, `retries=False`, `redirect=False` and `decode_content=False`.
PERF: `Session.send` adds request preparation, URL re-quoting, hooks, cookie extraction
and a Response object on top of that call (README, Performance, has the figures).

Two things urllib3 has no switch for are done through its documented extension points
(the pool's `ConnectionCls`, the pool manager's `pool_classes_by_scheme`):
- the request target goes out exactly as the proxy built it. `urlopen` re-encodes a
  target (`%2f` becomes `%2F`, and one stray `%` turns every escape into `%25..`); the
  query string is the client's, and not ours to rewrite.
- a total deadline per exchange: a watchdog shuts the socket down when it passes, so a
  read that a trickling upstream keeps alive byte by byte returns at once.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.cookiejar import CookiePolicy, DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection


class _RefuseCookies(DefaultCookiePolicy):
    """A shared session must never keep one response's cookies for the next request."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        """Refuse every cookie."""
        return False


def plain_session(verify: bool | str = True) -> requests.Session:
    """A session that sends only what it is given: no env proxies, default headers or cookies."""
    session = requests.Session()
    session.trust_env = False
    session.headers.clear()
    session.verify = verify
    policy: CookiePolicy = _RefuseCookies()
    session.cookies.set_policy(policy)
    return session


@dataclass(eq=False)
class Exchange:
    """One request in flight on this thread: its exact target and its deadline."""

    target: str
    deadline: float
    expired: bool = False
    finished: bool = False
    sock: socket.socket | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, sock: socket.socket | None) -> None:
        """Remember the socket the exchange runs on, so the watchdog can stop it."""
        with self.lock:
            self.sock = sock
            if self.expired and sock is not None:
                _shut(sock)

    def expire(self) -> None:
        """The deadline passed: unblock any read on the socket and drop the connection.

        NOTE: urllib3 pools a connection as the last body byte is read, a moment before the
        proxy calls `finish`; a deadline landing in that moment shuts a pooled socket, and
        the next exchange on it fails as a dropped connection (retried when idempotent).
        """
        with self.lock:
            if self.finished:
                return
            self.expired = True
            if self.sock is not None:
                _shut(self.sock)

    def finish(self) -> None:
        """Done with the socket: the watchdog must leave it alone from now on."""
        with self.lock:
            self.finished = True
            self.sock = None


def _shut(sock: socket.socket) -> None:
    # NOTE: OSError: already closed by the peer or by us; nothing left to unblock.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def current_exchange() -> Exchange | None:
    """The exchange this thread is running, if any."""
    exchange: Exchange | None = getattr(_current, "exchange", None)
    return exchange


class Deadlines:
    """Expires exchanges whose deadline passed; one watchdog thread per process.

    PERF: every exchange gets the same budget, so deadlines arrive in order and a deque
    is a priority queue: the watchdog only ever looks at its head.
    """

    def __init__(self, seconds: float) -> None:
        """`seconds`: the budget of each exchange."""
        self.seconds = seconds
        self._queue: collections.deque[Exchange] = collections.deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def begin(self, target: str) -> Exchange:
        """Start timing an exchange on this thread; `end` it when its response is done."""
        exchange = Exchange(target, time.monotonic() + self.seconds)
        _current.exchange = exchange
        self._queue.append(exchange)
        if self._thread is None:
            self._start()
        return exchange

    @staticmethod
    def end(exchange: Exchange) -> None:
        """The exchange is over (answered, failed or streamed to its end)."""
        exchange.finish()
        if getattr(_current, "exchange", None) is exchange:
            _current.exchange = None

    def _start(self) -> None:
        # NOTE: started on first use, in the worker: a thread started before gunicorn
        # forks would not exist in the child.
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="upstream-deadlines", daemon=True
                )
                self._thread.start()

    def _watch(self) -> None:
        queue = self._queue
        while True:
            now = time.monotonic()
            while queue and (queue[0].finished or queue[0].deadline <= now):
                queue.popleft().expire()
            # At most a second: finished exchanges behind a live one are swept meanwhile.
            time.sleep(min(queue[0].deadline - now if queue else self.seconds, 1.0))


class _ExactTargetMixin:
    """Send the current exchange's target verbatim and let its watchdog reach the socket."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        exchange = current_exchange()
        if exchange is not None:
            exchange.attach(self.sock)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        exchange = current_exchange()
        if exchange is not None:
            # NOTE: urlopen re-encoded `url` from this very target; only the encoding differs.
            url = exchange.target
            if self.sock is not None:
                exchange.attach(self.sock)
        super().request(method, url, *args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_ExactTargetMixin, HTTPConnection):
    pass


class _HTTPSConnection(_ExactTargetMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class ExactTargetAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools send the current exchange's target verbatim."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """As HTTPAdapter's, with our pool classes (the documented way to customise them)."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def upstream_session(base_url: str, pool_size: int, verify: bool | str) -> requests.Session:
    """The session for one upstream: a keep-alive pool of `pool_size` connections."""
    session = plain_session(verify)
    session.max_redirects = 0
    # NOTE: max_retries=0: a retry is the proxy's decision (idempotent methods only).
    adapter = ExactTargetAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount(base_url, adapter)
    return session


def session_pool(session: requests.Session, base_url: str) -> HTTPConnectionPool:
    """The urllib3 pool the session's adapter uses for `base_url`, TLS settings included."""
    adapter = session.get_adapter(base_url)
    if not isinstance(adapter, HTTPAdapter):
        raise TypeError(f"no HTTPAdapter mounted for {base_url}")
    probe = requests.Request("GET", base_url).prepare()
    pool = adapter.get_connection_with_tls_context(probe, session.verify)
    if not isinstance(pool, HTTPConnectionPool):
        raise TypeError(f"no HTTP connection pool for {base_url}")
    return pool
