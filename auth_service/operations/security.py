"""Responders of the `sessions` and `mfa` tags, and their admin counterparts under /users."""

from __future__ import annotations

import uuid
from typing import Any

import falcon

from auth_service.client import client_info
from auth_service.operations.representations import (
    TOKEN_RESPONSE_HEADERS,
    token_pair_json,
)
from auth_service.services.mfa import MfaService
from auth_service.services.sessions import SessionInfo, SessionService


def session_json(info: SessionInfo) -> dict[str, Any]:
    """The Session schema."""
    return {
        "id": str(info.id),
        "created_at": info.created_at.isoformat(),
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
        "expires_at": info.expires_at.isoformat(),
        "user_agent": info.user_agent,
        "ip_address": info.ip_address,
        "current": info.current,
    }


class SecurityOperations:
    """One responder per operationId; each reads validated input and calls one service."""

    def __init__(self, sessions: SessionService, mfa: MfaService) -> None:
        self._sessions = sessions
        self._mfa = mfa

    # --- sessions ----------------------------------------------------------------------

    def list_sessions(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /api/v1/auth/sessions."""
        found = self._sessions.list_sessions(req.context.principal.id, req.context.session_id)
        resp.media = {"items": [session_json(info) for info in found]}

    def end_all_sessions(self, req: falcon.Request, resp: falcon.Response) -> None:
        """DELETE /api/v1/auth/sessions."""
        self._sessions.end_all_sessions(req.context.principal.id, client_info(req))
        resp.status = falcon.HTTP_204

    def end_session(self, req: falcon.Request, resp: falcon.Response, session_id: str) -> None:
        """DELETE /api/v1/auth/sessions/{session_id}."""
        self._sessions.end_session(
            req.context.principal.id, uuid.UUID(session_id), client_info(req)
        )
        resp.status = falcon.HTTP_204

    def list_user_sessions(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        """GET /api/v1/users/{user_id}/sessions."""
        found = self._sessions.list_user_sessions(req.context.principal, uuid.UUID(user_id))
        resp.media = {"items": [session_json(info) for info in found]}

    def end_user_sessions(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        """DELETE /api/v1/users/{user_id}/sessions."""
        self._sessions.end_user_sessions(
            req.context.principal, uuid.UUID(user_id), client_info(req)
        )
        resp.status = falcon.HTTP_204

    # --- second factor -----------------------------------------------------------------

    def start_totp_enrolment(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/mfa/totp."""
        enrolment = self._mfa.start_enrolment(
            req.context.principal, req.context.body["password"], client_info(req)
        )
        resp.set_headers(TOKEN_RESPONSE_HEADERS)  # SECURITY: the secret must not be cached
        resp.media = {
            "secret": enrolment.secret,
            "otpauth_uri": enrolment.otpauth_uri,
            "qr_svg": enrolment.qr_svg,
        }

    def confirm_totp_enrolment(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/mfa/totp/confirm."""
        codes = self._mfa.confirm_enrolment(
            req.context.principal, req.context.body["code"], client_info(req)
        )
        resp.set_headers(TOKEN_RESPONSE_HEADERS)
        resp.media = {"recovery_codes": codes}

    def disable_totp(self, req: falcon.Request, resp: falcon.Response) -> None:
        """DELETE /api/v1/auth/mfa/totp."""
        body = req.context.body
        self._mfa.disable(req.context.principal, body["password"], body["code"], client_info(req))
        resp.status = falcon.HTTP_204

    def regenerate_recovery_codes(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/mfa/recovery-codes."""
        codes = self._mfa.regenerate_recovery_codes(
            req.context.principal, req.context.body["password"], client_info(req)
        )
        resp.set_headers(TOKEN_RESPONSE_HEADERS)
        resp.media = {"recovery_codes": codes}

    def login_mfa(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/login/mfa."""
        body = req.context.body
        pair = self._sessions.login_mfa(body["mfa_token"], body["code"], client_info(req))
        resp.set_headers(TOKEN_RESPONSE_HEADERS)
        resp.media = token_pair_json(pair)

    def reset_user_mfa(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        """DELETE /api/v1/users/{user_id}/mfa."""
        self._mfa.admin_reset(req.context.principal, uuid.UUID(user_id), client_info(req))
        resp.status = falcon.HTTP_204
