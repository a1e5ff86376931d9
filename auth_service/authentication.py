"""Bearer authentication for the operations whose `security` asks for a token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from auth_service.context import AuthRequest
from auth_service.db.models import User
from auth_service.problems import HTTPProblem, unauthorized
from auth_service.security.tokens import InvalidTokenError, KeyRing
from auth_service.spec import Contract
from authgate_common.access import Access
from authgate_common.bearer import bearer_token
from authgate_common.problem_types import ProblemType
from authgate_common.secrets_file import INTERNAL_TOKEN_HEADER, same_token

BEARER_SCHEME = "bearerAuth"
PrincipalLoader = Callable[[str, str], User | None]


class BearerAuthentication:
    """Verifies the access token and loads its live session's user as the principal."""

    def __init__(
        self,
        contract: Contract,
        key_ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        load_principal: PrincipalLoader,
    ) -> None:
        self._operations = contract.operation_index
        self._key_ring = key_ring
        self._issuer = issuer
        self._audience = audience
        self._load_principal = load_principal

    def process_resource(
        self, req: AuthRequest, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        """Reject a protected request without a valid token of a live session."""
        op = self._operations.get((req.uri_template or "", req.method))
        # NOTE: /userinfo's OAuth tokens are checked by its responder (RFC 6750 errors).
        if op is None or op.access is Access.PUBLIC or BEARER_SCHEME not in op.schemes:
            return
        token = bearer_token(req.get_header("Authorization"))
        if token is None:
            if op.access is Access.OPTIONAL:
                return
            raise unauthorized(
                ProblemType.MISSING_TOKEN, "A bearer token is required.", invalid_token=False
            )
        try:
            claims = self._key_ring.decode_access_token(
                token, issuer=self._issuer, audience=self._audience
            )
        except InvalidTokenError:
            raise unauthorized(
                ProblemType.INVALID_TOKEN,
                "The access token is invalid or expired.",
                invalid_token=True,
            ) from None
        # SECURITY: an OAuth access token (it names its client) never acts on the user's
        # account API: an app the user signed into gets only what its scopes reach.
        if "client_id" in claims:
            raise unauthorized(
                ProblemType.INVALID_TOKEN,
                "The access token is invalid or expired.",
                invalid_token=True,
            )
        # SECURITY: the session is checked on every request, so logout and revocation
        # take effect at once rather than when the token expires.
        principal = self._load_principal(claims["sub"], claims["sid"])
        if principal is None:
            raise unauthorized(
                ProblemType.SESSION_REVOKED, "The session has ended.", invalid_token=True
            )
        req.context.principal = principal
        req.context.session_id = claims["sid"]


class InternalAuthentication:
    """Admits only the gateway to the operations secured by `internalToken`."""

    def __init__(self, contract: Contract, internal_token: str) -> None:
        self._operations = contract.operation_index
        self._token = internal_token

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        """Refuse an internal operation without the shared token (constant-time compare)."""
        op = self._operations.get((req.uri_template or "", req.method))
        if op is None or not op.internal:
            return
        if not same_token(req.get_header(INTERNAL_TOKEN_HEADER), self._token):
            raise HTTPProblem(
                ProblemType.INVALID_INTERNAL_TOKEN,
                detail="This endpoint is for the gateway only.",
                headers={"WWW-Authenticate": 'InternalToken realm="authgate-internal"'},
            )
