"""The auth service's typed request context (what middleware hands to responders)."""

from __future__ import annotations

from typing import Any

import falcon

from auth_service.db.models import User
from auth_service.spec import Operation
from authgate_common.context import RequestContextBase


class AuthContext(RequestContextBase):
    """Set by the middleware in order: RequestContext, BearerAuthentication, SpecValidation."""

    # BearerAuthentication: the live session's user and session id (None when public).
    principal: User | None = None
    session_id: str | None = None
    # SpecValidation: the operation, the coerced query and the parsed body.
    operation: Operation | None = None
    query: dict[str, Any] | None = None
    body: Any = None
    request_valid: bool = False


class AuthRequest(falcon.Request):
    """A Falcon request whose `context` is an AuthContext."""

    context_type = AuthContext
    context: AuthContext
