"""Responders of the audit trail: the admin's view and each user's own security activity."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import falcon

from auth_service import errors
from auth_service.db.models import AuditEvent, User
from auth_service.services.audit import AuditTrail, EventQuery


def audit_event_json(event: AuditEvent) -> dict[str, Any]:
    """The AuditEvent schema."""
    return {
        "id": str(event.id),
        "occurred_at": event.occurred_at.isoformat(),
        "type": event.event_type,
        "actor_id": _optional_id(event.actor_id),
        "user_id": _optional_id(event.user_id),
        "session_id": _optional_id(event.session_id),
        "client_address": event.client_address,
        "user_agent": event.user_agent,
        "details": event.details,
    }


class AuditOperations:
    """GET /api/v1/audit-events (admins) and GET /api/v1/auth/events (the caller's own)."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    def list_audit_events(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /api/v1/audit-events."""
        _require_admin(req.context.principal)
        raw_user = req.context.query.get("user_id")
        user_id = uuid.UUID(raw_user) if raw_user else None
        self._page(req, resp, user_id)

    def list_my_events(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /api/v1/auth/events."""
        self._page(req, resp, req.context.principal.id)

    def _page(self, req: falcon.Request, resp: falcon.Response, user_id: uuid.UUID | None) -> None:
        query = req.context.query
        page = self._trail.page(
            EventQuery(
                user_id=user_id,
                types=tuple(query.get("type", ())),
                since=_moment(query.get("since")),
                until=_moment(query.get("until")),
            ),
            query.get("cursor"),
            query["limit"],
        )
        # SECURITY: who signed in from where is personal data: no shared cache keeps it.
        resp.cache_control = ["no-store"]
        resp.media = {
            "items": [audit_event_json(event) for event in page.items],
            "next_cursor": page.next_cursor,
        }


def _require_admin(actor: User) -> None:
    if not actor.is_superuser:
        raise errors.Forbidden("Only an admin may do this.")


def _moment(text: str | None) -> datetime | None:
    """A date-time the spec's format check already accepted (RFC 3339, with an offset)."""
    if text is None:
        return None
    # NOTE: Python 3.11 parses `Z` and offsets; RFC 3339's lower-case `t`/`z` too.
    return datetime.fromisoformat(text.upper())


def _optional_id(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None
