"""Responders of the `internal` tag: what only the gateway may read."""

from __future__ import annotations

import falcon

from auth_service.services.revocation import FeedCursor, RevocationFeed


class InternalOperations:
    """The revocation feed the gateway polls (every GATEWAY_REVOCATION_POLL_SECONDS)."""

    def __init__(self, feed: RevocationFeed) -> None:
        self._feed = feed

    def list_revoked_sessions(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /internal/v1/revoked-sessions."""
        raw = req.context.query.get("cursor")
        cursor = FeedCursor.decode(raw) if raw else None
        page = self._feed.page(cursor, req.context.query["limit"])
        ttl = self._feed.access_ttl
        resp.cache_control = ["no-store"]
        resp.media = {
            "items": [
                {
                    "session_id": str(session_id),
                    "revoked_at": revoked_at.isoformat(),
                    "expires_at": (revoked_at + ttl).isoformat(),
                }
                for session_id, revoked_at in page.items
            ],
            "next_cursor": page.next_cursor.encode(),
            "has_more": page.has_more,
        }
