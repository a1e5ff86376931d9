"""Responders of the `auth` tag: sign-up, sign-in, tokens, password reset, email verification."""

from __future__ import annotations

import falcon

from auth_service.client import client_info
from auth_service.operations.representations import (
    TOKEN_RESPONSE_HEADERS,
    token_pair_json,
    user_json,
)
from auth_service.services.accounts import AccountService
from auth_service.services.email_verification import EmailVerificationService
from auth_service.services.password_reset import PasswordResetService
from auth_service.services.sessions import SessionService

RESET_ACCEPTED = {
    "detail": "If an account exists for this email, a password reset link has been sent."
}
# REQUIRE_EMAIL_VERIFICATION: the one answer to a new and a taken address alike.
REGISTER_ACCEPTED = {"detail": "Check your inbox: we sent a mail to this address."}
VERIFICATION_ACCEPTED = {
    "detail": "If your email address is not verified yet, a new verification link has been sent."
}


class AuthOperations:
    """One responder per operationId; each reads validated input and calls one service."""

    def __init__(
        self,
        accounts: AccountService,
        sessions: SessionService,
        password_resets: PasswordResetService,
        email_verification: EmailVerificationService,
    ) -> None:
        self._accounts = accounts
        self._sessions = sessions
        self._password_resets = password_resets
        self._email_verification = email_verification

    def register(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/register."""
        body = req.context.body
        email, password, full_name = body["email"], body["password"], body.get("full_name")
        if self._accounts.verification_required:
            # SECURITY: the answer must not say whether the address has an account.
            self._accounts.register_quietly(email, password, full_name, client_info(req))
            resp.status = falcon.HTTP_202
            resp.media = REGISTER_ACCEPTED
            return
        user = self._accounts.register(email, password, full_name, client_info(req))
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

    def verify_email(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/verify-email."""
        self._email_verification.verify(req.context.body["token"], client_info(req))
        resp.status = falcon.HTTP_204

    def resend_verification_email(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/auth/verify-email/resend."""
        # NOTE: a verified address gets the same 202 and no mail (nothing to prove).
        self._email_verification.resend(req.context.principal.id)
        resp.status = falcon.HTTP_202
        resp.media = VERIFICATION_ACCEPTED
