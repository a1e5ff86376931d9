"""Service discovery: spread an upstream's requests over every address its DNS name has.

A name such as `auth` under `docker compose --scale auth=3`, or a Kubernetes headless
Service, resolves to one address per replica. The operating system would hand a client the
first one (or a random one) per connection, and keep-alive connections then pin all traffic
to it. An AddressBook resolves the name itself, every `refresh_seconds`, and hands out its
addresses in turn; an address that refused a connection is skipped for `retry_seconds`,
then offered again so that it gets traffic as soon as it answers.

This module only selects addresses: connections, pooling and retries stay with the
transport (proxy.py). Its interface is two calls: `next_address()` and
`mark_failed(address)` (`mark_ok(address)` when one answered again).
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

Resolver = Callable[[str, int], list[str]]


def resolve_all(host: str, port: int) -> list[str]:
    """Every address of `host`, in the resolver's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AddressBook:
    """The addresses of one upstream host, re-resolved periodically, handed out in turn."""

    def __init__(
        self,
        host: str,
        port: int,
        refresh_seconds: float,
        retry_seconds: float,
        *,
        resolver: Resolver = resolve_all,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self._refresh_seconds = refresh_seconds
        self._retry_seconds = retry_seconds
        self._resolver = resolver
        self._clock = clock
        self._lock = threading.Lock()
        self._addresses: list[str] = []
        self._resolved_at = float("-inf")
        self._failed_until: dict[str, float] = {}
        self._turn = itertools.count()

    def next_address(self) -> str:
        """The next address to use: healthy ones in turn; if none is, the longest-failed."""
        now = self._clock()
        with self._lock:
            if now - self._resolved_at >= self._refresh_seconds:
                self._refresh(now)
            healthy = [a for a in self._addresses if self._failed_until.get(a, 0.0) <= now]
            if healthy:
                return healthy[next(self._turn) % len(healthy)]
            # NOTE: every address refused recently: try the one whose pause ends first
            # rather than fail without trying (the transport reports the failure).
            return min(self._addresses, key=lambda a: self._failed_until.get(a, 0.0))

    def mark_failed(self, address: str) -> None:
        """`address` refused a connection: skip it for retry_seconds."""
        with self._lock:
            self._failed_until[address] = self._clock() + self._retry_seconds

    def mark_ok(self, address: str) -> None:
        """`address` answered: it is healthy again at once."""
        with self._lock:
            self._failed_until.pop(address, None)

    def _refresh(self, now: float) -> None:
        self._resolved_at = now
        try:
            found = self._resolver(self.host, self.port)
        except OSError:
            found = []
        if found:
            self._addresses = found
            # Forget the health of addresses the name no longer has.
            self._failed_until = {a: t for a, t in self._failed_until.items() if a in found}
        elif not self._addresses:
            # NOTE: DNS is down and nothing is known yet: let the transport try the name
            # itself. A stale list is kept otherwise: old addresses beat none.
            self._addresses = [self.host]


def url_with_address(base_url: str, address: str) -> str:
    """`base_url` with its host replaced by `address` (bracketed when IPv6)."""
    parts = urlsplit(base_url)
    host = f"[{address}]" if _is_ipv6(address) else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def address_book_for(
    base_url: str, refresh_seconds: float, retry_seconds: float
) -> AddressBook | None:
    """An AddressBook for a plain-http upstream given by name; None when not applicable.

    Off when refresh_seconds is 0; not for https (certificates name the host, not each
    address) nor for an IP literal (one address, nothing to spread).
    """
    parts = urlsplit(base_url)
    if refresh_seconds <= 0 or parts.scheme != "http" or not parts.hostname:
        return None
    if _is_ip(parts.hostname):
        return None
    return AddressBook(parts.hostname, parts.port or 80, refresh_seconds, retry_seconds)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_ipv6(address: str) -> bool:
    return _is_ip(address) and ":" in address
