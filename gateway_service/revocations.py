"""Revoked sessions learned by polling the auth service, with or without Redis.

Each gunicorn worker polls GET /internal/v1/revoked-sessions every
GATEWAY_REVOCATION_POLL_SECONDS from a daemon thread and keeps every revoked session id
until its last access token expires, so a logged-out token is refused within a poll
interval in the embedded default (no REDIS_URL) too.

NOTE: the gateway polls when Redis is configured as well. The auth service's write to
Redis is best effort (a failed write is logged, not retried), while the feed is read
from rows written in the revoking transaction: polling closes that gap, at the cost of
one small request per worker and interval.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests

from authgate_common.secrets_file import INTERNAL_TOKEN_HEADER
from gateway_service.settings import Settings

log = logging.getLogger(__name__)

# A bound on one poll's pages: a feed that never says "no more" cannot pin the thread.
_MAX_PAGES_PER_POLL = 100


class FeedError(Exception):
    """The feed answered with something other than a page of revoked sessions."""


class RevokedSessions:
    """The revoked session ids this worker knows, each until its access tokens expire."""

    def __init__(
        self,
        settings: Settings,
        session: requests.Session,
        internal_token: str,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """Prepare; nothing is fetched until poll() or start(); `on_failure` counts failures."""
        self._url = settings.revocation_feed_url
        self._headers = {INTERNAL_TOKEN_HEADER: internal_token, "Accept": "application/json"}
        self._timeout = (settings.connect_timeout, min(settings.read_timeout, 5.0))
        self._interval = settings.revocation_poll_seconds
        # Tokens are accepted until exp + leeway; so are their sessions' revocations kept.
        self._leeway = settings.jwt_leeway_seconds
        self._session = session
        self._clock = clock
        self._poll_lock = threading.Lock()
        # PERF: read without a lock on every bearer request (a dict lookup is atomic);
        # the poller only adds keys, and swaps in a purged copy now and then.
        self._expiry: dict[str, float] = {}
        self._cursor: str | None = None
        self._failing = False
        self._on_failure = on_failure

    def __contains__(self, session_id: object) -> bool:
        """Whether this session was revoked (and its access tokens may still be live)."""
        return session_id in self._expiry

    def poll(self) -> bool:
        """Read the feed up to now; False (logged once per outage) when it failed."""
        with self._poll_lock:
            try:
                self._read_pages()
            except (requests.RequestException, ValueError, KeyError, TypeError, FeedError) as ex:
                if not self._failing:
                    # FeedError's text is ours (a status); others could carry the URL.
                    reason = str(ex) if isinstance(ex, FeedError) else type(ex).__name__
                    log.warning("revocation feed unavailable: %s", reason)
                self._failing = True
                if self._on_failure is not None:
                    self._on_failure()
                return False
            if self._failing:
                log.warning("revocation feed available again")
            self._failing = False
            self._purge()
            return True

    def start(self) -> None:
        """Poll every interval from a daemon thread, until this object is garbage."""
        thread = threading.Thread(
            target=_poll_forever,
            args=(weakref.ref(self), self._interval),
            name="revocation-feed",
            daemon=True,
        )
        thread.start()

    def _read_pages(self) -> None:
        for _ in range(_MAX_PAGES_PER_POLL):
            params = {"cursor": self._cursor} if self._cursor else {}
            response = self._session.get(
                self._url,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
            if response.status_code == 401:
                raise FeedError("401: INTERNAL_API_TOKEN differs from the auth service's")
            if response.status_code != 200:
                raise FeedError(f"status {response.status_code}")
            page = response.json()
            self._merge(page)
            if page["has_more"] is not True:
                return

    def _merge(self, page: Any) -> None:
        if not isinstance(page, dict) or not isinstance(page.get("next_cursor"), str):
            raise FeedError("not a page")
        items = page.get("items")
        if not isinstance(items, list):
            raise FeedError("not a page")
        for item in items:
            # A malformed item raises (KeyError, ValueError, TypeError): the cursor stays.
            expires = datetime.fromisoformat(item["expires_at"]).timestamp() + self._leeway
            self._expiry[str(item["session_id"])] = expires
        # The cursor moves only once the page is merged: a failure re-reads it next time.
        self._cursor = page["next_cursor"]

    def _purge(self) -> None:
        now = self._clock()
        if any(expires <= now for expires in self._expiry.values()):
            self._expiry = {sid: exp for sid, exp in self._expiry.items() if exp > now}


def _poll_forever(ref: weakref.ReferenceType[RevokedSessions], interval: float) -> None:
    """The poller thread: holds only a weak reference, so a discarded app stops it."""
    while True:
        time.sleep(interval)
        feed = ref()
        if feed is None:
            return
        feed.poll()
        del feed
