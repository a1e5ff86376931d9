"""Authlib's authorization server adapted to Falcon, with our grants, tokens and storage.

The protocol logic (request validation, PKCE, client authentication, error responses,
ID tokens, introspection, revocation) is Authlib's; this module only tells it where
things are kept (auth_service/oauth/store.py) and how our tokens look (RFC 9068 access
tokens signed by the key ring; docs in README, "OAuth 2.0 and OpenID Connect").
"""

from __future__ import annotations

import hmac
import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authlib.oauth2 import rfc6749, rfc7009, rfc7636, rfc7662
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode

from auth_service.db.models import OAuthAuthorizationCode, OAuthClient, RefreshToken, Session
from auth_service.oauth.store import AuthorizationRequest, GrantedSession, OAuthStore
from auth_service.security.opaque import new_token, token_hash
from auth_service.security.tokens import InvalidTokenError, KeyRing
from auth_service.services.oauth_clients import redirect_uri_registered
from auth_service.services.sessions import ClientInfo

STANDARD_SCOPES = ("openid", "profile", "email", "offline_access")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# NOTE: Authlib refuses plain-http request URIs unless told otherwise; TLS is the
# gateway's (PUBLIC_URL is what clients see, plain http in development), so the library
# sees a placeholder and the real URI is set after (FalconRequest).
_SECURE_PLACEHOLDER = "https://authgate.invalid/"


@dataclass(frozen=True)
class TokenSettings:
    """What our tokens carry and how long they live."""

    issuer: str
    audience: str
    access_ttl_seconds: int
    id_token_ttl_seconds: int


@dataclass(frozen=True)
class HttpRequest:
    """The parts of a Falcon request Authlib reads (built by the operations)."""

    method: str
    uri: str
    headers: Mapping[str, str]
    query: Mapping[str, list[str]]
    form: Mapping[str, list[str]]
    client: ClientInfo


class _Payload(rfc6749.OAuth2Payload):  # type: ignore[misc]
    def __init__(self, values: Mapping[str, list[str]]) -> None:
        self._values = values

    @property
    def data(self) -> dict[str, str]:
        return {name: values[0] for name, values in self._values.items() if values}

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return defaultdict(list, {name: list(values) for name, values in self._values.items()})


class FalconRequest(rfc6749.OAuth2Request):  # type: ignore[misc]
    """An OAuth2Request over the query (authorize) or the form body (token endpoints)."""

    def __init__(self, http: HttpRequest) -> None:
        super().__init__(http.method, _SECURE_PLACEHOLDER, headers=dict(http.headers))
        self.uri = http.uri
        self.http = http
        values = http.query if http.method == "GET" else http.form
        self.payload = _Payload(values)

    @property
    def args(self) -> dict[str, str]:
        return {name: values[0] for name, values in self.http.query.items() if values}

    @property
    def form(self) -> dict[str, str]:
        return {name: values[0] for name, values in self.http.form.items() if values}


class _JsonPayload(rfc6749.JsonPayload):  # type: ignore[misc]
    def __init__(self, data: Mapping[str, list[str]]) -> None:
        self._data = data

    @property
    def data(self) -> Mapping[str, list[str]]:
        return self._data


class FalconJsonRequest(rfc6749.JsonRequest):  # type: ignore[misc]
    """Authlib's JSON request shape (none of our endpoints takes JSON; kept complete)."""

    def __init__(self, http: HttpRequest) -> None:
        super().__init__(http.method, http.uri, dict(http.headers))
        self.payload = _JsonPayload(http.form)


@dataclass(frozen=True)
class OAuthResponse:
    """What Authlib answered: status, body (JSON text or empty) and headers."""

    status: int
    body: str
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        """The redirect target, if this is a redirect."""
        return next((value for name, value in self.headers if name == "Location"), None)


class Client(rfc6749.ClientMixin):  # type: ignore[misc]
    """A registered client (auth_service/db/models.py OAuthClient) as Authlib sees it."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row
        self.client_id = row.client_id

    @property
    def confidential(self) -> bool:
        return self.row.client_type == "confidential"

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> None:
        # NOTE: no default: every authorization request names its redirect URI.
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scope if the client may have all of it; None: invalid_scope."""
        requested = rfc6749.scope_to_list(scope) or []
        if not set(requested) <= set(self.row.scopes):
            return None
        return " ".join(dict.fromkeys(requested))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # SECURITY: exact match, a loopback port aside (services/oauth_clients.py).
        return redirect_uri_registered(self.row.redirect_uris, redirect_uri)

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.row.client_secret_hash
        if stored is None:
            return False
        # SECURITY: the secret carries 256 random bits; a constant-time hash compare.
        return hmac.compare_digest(stored, token_hash(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.confidential:
            return method in CONFIDENTIAL_AUTH_METHODS
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.row.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials" and not self.confidential:
            return False  # SECURITY: a public client has no credentials to present.
        return grant_type in self.row.grant_types


class AuthorizationCode(rfc6749.AuthorizationCodeMixin):  # type: ignore[misc]
    """A stored code as Authlib (and its OpenID Connect extension) sees it."""

    def __init__(self, row: OAuthAuthorizationCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return int(self.row.auth_time.timestamp())

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> list[str]:
        return self.row.amr.split()


class RefreshGrantToken(rfc6749.TokenMixin):  # type: ignore[misc]
    """A claimed refresh token (grant) or a looked-up one (introspection, revocation)."""

    def __init__(
        self,
        session: Session,
        refresh: RefreshToken | None = None,
        granted: GrantedSession | None = None,
    ) -> None:
        self.session = session
        self.refresh = refresh
        self.granted = granted

    def check_client(self, client: Client) -> bool:
        return self.session.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.session.scope or ""

    def get_expires_in(self) -> int:
        return 0

    def is_expired(self) -> bool:
        return self.refresh is not None and self.refresh.expires_at.timestamp() <= time.time()

    def is_revoked(self) -> bool:
        return self.session.revoked_at is not None or (
            self.refresh is not None and self.refresh.used_at is not None
        )


class AccessToken(rfc6749.TokenMixin):  # type: ignore[misc]
    """A verified access token of ours (introspection, revocation)."""

    def __init__(self, claims: dict[str, Any], live: bool) -> None:
        self.claims = claims
        self.live = live

    def check_client(self, client: Client) -> bool:
        return bool(self.claims.get("client_id") == client.get_client_id())

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def get_expires_in(self) -> int:
        return max(0, int(self.claims["exp"]) - int(time.time()))

    def is_expired(self) -> bool:
        return int(self.claims["exp"]) <= time.time()

    def is_revoked(self) -> bool:
        return not self.live


class TokenGenerator:
    """Our tokens: RFC 9068 access tokens signed by the key ring, opaque refresh tokens."""

    def __init__(self, key_ring: KeyRing, settings: TokenSettings) -> None:
        self._key_ring = key_ring
        self._settings = settings

    def __call__(
        self,
        grant_type: str,
        client: Client,
        user: GrantedSession | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        scope = scope or ""
        claims: dict[str, Any] = {"client_id": client.get_client_id(), "scope": scope}
        if user is None:
            # client_credentials: the client acts for itself; no sid, no role.
            claims["sub"] = client.get_client_id()
        else:
            claims.update(
                sub=str(user.user.id),
                sid=str(user.session.id),
                role=user.user.role,
                amr=user.session.amr.split(),
            )
            auth_time = user.auth_time or user.session.created_at
            claims["auth_time"] = int(auth_time.timestamp())
        ttl = self._settings.access_ttl_seconds
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": self._key_ring.issue_oauth_access_token(
                claims=claims,
                ttl_seconds=ttl,
                issuer=self._settings.issuer,
                audience=self._settings.audience,
            ),
            "expires_in": ttl,
            "scope": scope,
        }
        if include_refresh_token and user is not None:
            token["refresh_token"] = new_token()
        return token


class FalconAuthorizationServer(rfc6749.AuthorizationServer):  # type: ignore[misc]
    """Authlib's AuthorizationServer for Falcon: our requests in, OAuthResponse out."""

    def __init__(self, store: OAuthStore, scopes: list[str]) -> None:
        super().__init__(scopes_supported=scopes)
        self.store = store

    def query_client(self, client_id: str) -> Client | None:
        row = self.store.client(client_id)
        return Client(row) if row is not None else None

    def save_token(self, token: dict[str, Any], request: FalconRequest) -> None:
        refresh = token.get("refresh_token")
        if refresh and isinstance(request.user, GrantedSession):
            self.store.add_refresh_token(request.user, refresh, request.http.client)

    def create_oauth2_request(self, request: HttpRequest | FalconRequest) -> FalconRequest:
        if isinstance(request, FalconRequest):
            return request
        return FalconRequest(request)

    def create_json_request(self, request: HttpRequest) -> FalconJsonRequest:
        return FalconJsonRequest(request)

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> OAuthResponse:
        text = json.dumps(body) if isinstance(body, dict) else str(body or "")
        return OAuthResponse(status, text, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib's signals (client authenticated, token revoked): nothing listens."""


class CodeChallenge(rfc7636.CodeChallenge):  # type: ignore[misc]
    """PKCE for every client, S256 only (RFC 9700 §2.1.1: plain is refused)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - Authlib's class attribute
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge'", redirect_uri=redirect_uri)
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError(
                "'code_challenge_method' must be S256", redirect_uri=redirect_uri
            )
        try:
            super().validate_code_challenge(grant, redirect_uri)
        except InvalidRequestError as error:
            error.redirect_uri = redirect_uri
            raise


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """Authorization code (+ PKCE, enforced by CodeChallenge) backed by our store."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*CONFIDENTIAL_AUTH_METHODS, "none"]  # noqa: RUF012
    server: FalconAuthorizationServer

    def save_authorization_code(self, code: str, request: FalconRequest) -> None:
        # NOTE: request.user is who approved on the consent page (operations/oauth.py).
        self.server.store.save_code(code, authorization_request(request), request.user)

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        row = self.server.store.code(code, client.get_client_id())
        return AuthorizationCode(row) if row is not None else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        # NOTE: the code was claimed (used_at) when redeemed; the row stays so that a
        # second redemption can find and revoke what the first one issued.
        return None

    def authenticate_user(self, authorization_code: AuthorizationCode) -> GrantedSession | None:
        return self.server.store.redeem_code(authorization_code.row, self.request.http.client)


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    """Refresh with rotation: each refresh token is used once (RFC 9700 §4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*CONFIDENTIAL_AUTH_METHODS, "none"]  # noqa: RUF012
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: FalconAuthorizationServer

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshGrantToken | None:
        # NOTE: the client was authenticated before this (Authlib's order), so the claim
        # is bound to it: another client's token is never used up here.
        granted = self.server.store.rotate_refresh_token(
            refresh_token, self.request.client.get_client_id()
        )
        if granted is None:
            return None
        return RefreshGrantToken(granted.session, granted=granted)

    def authenticate_user(self, refresh_token: RefreshGrantToken) -> GrantedSession | None:
        return refresh_token.granted

    def revoke_old_credential(self, refresh_token: RefreshGrantToken) -> None:
        # NOTE: already used up when it was claimed (OAuthStore.rotate_refresh_token).
        return None


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """A confidential client acting for itself, within its registered scopes."""

    def validate_token_request(self) -> None:
        super().validate_token_request()
        # SECURITY: Authlib checks the scope against the server's list only; a client
        # never gets a scope it was not registered for.
        if self.request.client.get_allowed_scope(self.request.payload.scope) is None:
            raise InvalidScopeError()


class OpenIDConnect(OpenIDCode):  # type: ignore[misc]
    """ID tokens for the code flow, signed with the key ring's current key (its kid)."""

    def __init__(self, store: OAuthStore, key_ring: KeyRing, settings: TokenSettings) -> None:
        super().__init__(require_nonce=False)
        self._store = store
        self._key_ring = key_ring
        self._settings = settings

    def exists_nonce(self, nonce: str, request: FalconRequest) -> bool:
        return self._store.nonce_used(request.payload.client_id, nonce)

    def resolve_client_private_key(self, client: Client) -> dict[str, Any]:
        return self._key_ring.signing_jwk()

    def get_client_algorithm(self, client: Client) -> str:
        return self._key_ring.algorithm

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": self._key_ring.algorithm, "kid": self._key_ring.kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self._settings.issuer,
            "aud": client.get_client_id(),
            "iat": now,
            "exp": now + self._settings.id_token_ttl_seconds,
        }

    def generate_user_info(self, user: GrantedSession, scope: str) -> UserInfo:
        return user_claims(user.user.id, user.user.email, user.user.full_name, scope)


def user_claims(user_id: object, email: str, name: str | None, scope: str) -> UserInfo:
    """The OpenID Connect claims a scope releases (ID token and /userinfo alike)."""
    scopes = set(scope.split())
    info = UserInfo(sub=str(user_id))
    if "email" in scopes:
        info["email"] = email
    if "profile" in scopes and name:
        info["name"] = name
    return info


class IntrospectionEndpoint(rfc7662.IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662 for confidential clients, about the tokens issued to them."""

    CLIENT_AUTH_METHODS = list(CONFIDENTIAL_AUTH_METHODS)  # noqa: RUF012

    def __init__(self, server: FalconAuthorizationServer, lookup: TokenLookup) -> None:
        super().__init__(server)
        self._lookup = lookup

    def query_token(
        self, token_string: str, token_type_hint: str | None
    ) -> AccessToken | RefreshGrantToken | None:
        return self._lookup(token_string)

    def check_permission(
        self, token: AccessToken | RefreshGrantToken, client: Client, request: FalconRequest
    ) -> bool:
        # SECURITY: a client learns only about its own tokens.
        return token.check_client(client)

    def introspect_token(self, token: AccessToken | RefreshGrantToken) -> dict[str, Any]:
        if isinstance(token, AccessToken):
            claims = token.claims
            payload: dict[str, Any] = {
                name: claims[name]
                for name in ("scope", "client_id", "sub", "exp", "iat", "nbf", "iss", "jti")
                if name in claims
            }
            payload["aud"] = claims["aud"]
            payload["token_type"] = "Bearer"  # noqa: S105 - a token type, not a secret
            return payload
        session = token.session
        assert token.refresh is not None
        return {
            "scope": session.scope or "",
            "client_id": session.client_id,
            "sub": str(session.user_id),
            "exp": int(token.refresh.expires_at.timestamp()),
            "iat": int(token.refresh.created_at.timestamp()),
            "token_type": "refresh_token",
        }


class RevocationEndpoint(rfc7009.RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009: revoking either token of a user's grant ends its session."""

    CLIENT_AUTH_METHODS = [*CONFIDENTIAL_AUTH_METHODS, "none"]  # noqa: RUF012

    def __init__(self, server: FalconAuthorizationServer, lookup: TokenLookup) -> None:
        super().__init__(server)
        self._lookup = lookup
        self._store = server.store

    def query_token(
        self, token_string: str, token_type_hint: str | None
    ) -> AccessToken | RefreshGrantToken | None:
        return self._lookup(token_string)

    def revoke_token(self, token: AccessToken | RefreshGrantToken, request: FalconRequest) -> None:
        if isinstance(token, RefreshGrantToken):
            self._store.end_session(token.session.id)
            return
        sid = token.claims.get("sid")
        session = self._store.live_session(sid) if isinstance(sid, str) else None
        if session is not None:
            self._store.end_session(session.id)
        # NOTE: a client_credentials token belongs to no session; it expires on its own
        # (short-lived), which RFC 7009 §2 allows for self-contained access tokens.


class TokenLookup:
    """Finds what a presented token is: one of our OAuth access tokens, or a refresh token."""

    def __init__(self, store: OAuthStore, key_ring: KeyRing, settings: TokenSettings) -> None:
        self._store = store
        self._key_ring = key_ring
        self._settings = settings

    def __call__(self, presented: str) -> AccessToken | RefreshGrantToken | None:
        if presented.count(".") == 2:
            claims = self.access_claims(presented)
            if claims is None:
                return None
            sid = claims.get("sid")
            live = not isinstance(sid, str) or self._store.live_session(sid) is not None
            return AccessToken(claims, live)
        found = self._store.refresh_token_session(presented)
        if found is None:
            return None
        refresh, session = found
        return RefreshGrantToken(session, refresh=refresh)

    def access_claims(self, presented: str) -> dict[str, Any] | None:
        """The claims of a valid OAuth access token of ours (one with `client_id`)."""
        try:
            claims = self._key_ring.decode_access_token(
                presented,
                issuer=self._settings.issuer,
                audience=self._settings.audience,
                require_caller=False,
            )
        except InvalidTokenError:
            return None
        return claims if isinstance(claims.get("client_id"), str) else None


def build_server(
    store: OAuthStore, key_ring: KeyRing, settings: TokenSettings, api_scopes: tuple[str, ...]
) -> FalconAuthorizationServer:
    """The authorization server with our grants and endpoints (no implicit, no password)."""
    server = FalconAuthorizationServer(store, list(dict.fromkeys([*STANDARD_SCOPES, *api_scopes])))
    server.register_token_generator("default", TokenGenerator(key_ring, settings))
    server.register_grant(
        AuthorizationCodeGrant,
        [CodeChallenge(required=True), OpenIDConnect(store, key_ring, settings)],
    )
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    lookup = TokenLookup(store, key_ring, settings)
    server.register_endpoint(IntrospectionEndpoint(server, lookup))
    server.register_endpoint(RevocationEndpoint(server, lookup))
    return server


def authorization_request(request: FalconRequest) -> AuthorizationRequest:
    """The authorization request as Authlib validated it (scope resolved)."""
    data = request.payload.data
    return AuthorizationRequest(
        client_id=request.client.get_client_id(),
        redirect_uri=data["redirect_uri"],
        scope=request.scope or "",
        state=data.get("state"),
        nonce=data.get("nonce"),
        code_challenge=data["code_challenge"],
        code_challenge_method=data["code_challenge_method"],
    )
