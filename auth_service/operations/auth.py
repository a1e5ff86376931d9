"""Responders of the `auth` tag: sign-up, sign-in, tokens, password reset."""

from __future__ import annotations

import falcon

from auth_service.client import client_info
from auth_service.operations.representations import (
    TOKEN_RESPONSE_HEADERS,
    token_pair_json,
    user_json,
)
from auth_service.services.accounts import AccountService
from auth_service.services.password_reset import PasswordResetService
from auth_service.services.sessions import SessionService

RESET_ACCEPTED = {
    "detail": "If an account exists for this email, a password reset link has been sent."
}


class AuthOperations:
    """One responder per operationId; each reads validated input and calls one service."""

    def __init__(
        self,
        accounts: AccountService,
        sessions: SessionService,
        password_resets: PasswordResetService,
    ) -> None:
        self._accounts = accounts
        self._sessions = sessions
        self._password_resets = password_resets

    def register(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/register."""
        body = req.context.body
        user = self._accounts.register(
            body["email"], body["password"], body.get("full_name"), client_info(req)
        )
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/users/{user.id}"
        resp.media = user_json(user)

    def login(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/login."""
        body = req.context.body
        pair = self._sessions.login(body["email"], body["password"], client_info(req))
        resp.set_headers(TOKEN_RESPONSE_HEADERS)
        resp.media = token_pair_json(pair)

    def refresh(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/refresh."""
        pair = self._sessions.refresh(req.context.body["refresh_token"], client_info(req))
        resp.set_headers(TOKEN_RESPONSE_HEADERS)
        resp.media = token_pair_json(pair)

    def logout(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/logout."""
        self._sessions.logout(req.context.body["refresh_token"], client_info(req))
        resp.status = falcon.HTTP_204

    def get_me(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /api/v1/auth/me."""
        resp.media = user_json(req.context.principal)

    def request_password_reset(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/password-reset."""
        self._password_resets.request(req.context.body["email"])
        resp.status = falcon.HTTP_202
        resp.media = RESET_ACCEPTED

    def confirm_password_reset(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/password-reset/confirm."""
        body = req.context.body
        self._password_resets.confirm(body["token"], body["new_password"], client_info(req))
        resp.status = falcon.HTTP_204
