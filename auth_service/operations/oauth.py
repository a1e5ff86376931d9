"""Responders of the `oauth` tag: the OAuth 2.0 / OpenID Connect provider endpoints.

Errors here are the protocol's own (RFC 6749 §5.2 JSON, or a redirect with `error=` from
the authorize endpoint), not problem+json: relying parties' libraries read those.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

import falcon
from authlib.oauth2.rfc6749.errors import OAuth2Error

from auth_service import errors
from auth_service.client import client_info
from auth_service.db.models import OAuthPendingAuthorization
from auth_service.oauth import pages
from auth_service.oauth.server import (
    GRANT_TYPES,
    FalconAuthorizationServer,
    HttpRequest,
    OAuthResponse,
    TokenLookup,
    authorization_request,
    user_claims,
)
from auth_service.oauth.store import AuthorizationRequest, OAuthStore, SignedIn
from auth_service.security.opaque import token_hash
from auth_service.services.sessions import MFA_AMR, PASSWORD_AMR, SessionService
from authgate_common.bearer import bearer_token

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 64
BROWSER_COOKIE = "authgate_oauth"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


class FormError(ValueError):
    """A body that is not a well-formed, storable form."""


class OAuthOperations:
    """Authorize (with its pages), token, introspection, revocation, userinfo, discovery."""

    def __init__(
        self,
        server: FalconAuthorizationServer,
        store: OAuthStore,
        sessions: SessionService,
        lookup: TokenLookup,
        discovery: dict[str, Any],
        *,
        secure_cookie: bool,
    ) -> None:
        self._server = server
        self._store = store
        self._sessions = sessions
        self._lookup = lookup
        self._discovery = discovery
        self._secure_cookie = secure_cookie

    # --- GET/POST /oauth/authorize ------------------------------------------------------

    def start_authorization(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /oauth/authorize: validate the request, then the sign-in page."""
        http = _http_request(req, form={})
        try:
            grant = self._server.get_consent_grant(http)
        except OAuth2Error as error:
            _authorize_error(resp, self._server.handle_error_response(None, error), 302)
            return
        except ValueError:
            # NOTE: Authlib refuses to put non-ASCII input (an odd response_type) in an
            # error description (RFC 6749 §5.2); such a request gets the error page.
            pages.render(resp, 400, pages.error("The application's sign-in request is invalid."))
            return
        oauth_request = grant.request
        request = authorization_request(oauth_request)
        browser, csrf = self._store.open_pending(request)
        resp.set_cookie(
            BROWSER_COOKIE,
            browser,
            path="/oauth/authorize",
            secure=self._secure_cookie,
            http_only=True,
            same_site="Lax",
            max_age=600,
        )
        pages.render(resp, 200, pages.sign_in(oauth_request.client.row.name, csrf))

    def continue_authorization(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /oauth/authorize: the sign-in, MFA or consent form of a pending request."""
        try:
            form = _first_values(_read_form(req))
        except FormError:
            pages.render(resp, 400, pages.error("The form could not be read."))
            return
        browser = req.get_cookie_values(BROWSER_COOKIE)
        pending = (
            self._store.pending(browser[0], form.get("csrf_token", ""))
            if browser and form.get("csrf_token")
            else None
        )
        if pending is None:
            # SECURITY: no form acts without this browser's own CSRF token (login CSRF
            # and consent CSRF alike).
            pages.render(resp, 403, pages.error("This sign-in expired or the form was not ours."))
            return
        client = self._store.client(pending.client_id)
        if client is None:
            pages.render(resp, 400, pages.error("The application is no longer registered."))
            return
        csrf = form["csrf_token"]
        if pending.stage == "sign_in":
            self._sign_in(req, resp, pending, client.name, csrf, form)
        elif pending.stage == "mfa":
            self._second_factor(req, resp, pending, client.name, csrf, form)
        else:
            self._decide(req, resp, pending, form)

    def _sign_in(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        pending: OAuthPendingAuthorization,
        client_name: str,
        csrf: str,
        form: Mapping[str, str],
    ) -> None:
        email = form.get("email", "")
        try:
            user = self._sessions.authenticate(email, form.get("password", ""), client_info(req))
        except errors.MfaRequired as required:
            mfa_token = str(required.members["mfa_token"])
            self._store.await_second_factor(pending.id, mfa_token)
            pages.render(resp, 200, pages.mfa(csrf, mfa_token))
            return
        except errors.LoginThrottled:
            message = "Too many failed sign-in attempts; try again later."
            pages.render(resp, 429, pages.sign_in(client_name, csrf, email=email, error=message))
            return
        except (
            errors.InvalidCredentials,
            errors.InactiveUser,
            errors.InvalidEmail,
            errors.PasswordTooLong,
        ):
            message = "Invalid email or password."
            pages.render(resp, 401, pages.sign_in(client_name, csrf, email=email, error=message))
            return
        self._store.signed_in(pending.id, user.id, " ".join(PASSWORD_AMR))
        pages.render(resp, 200, pages.consent(client_name, csrf, pending.scope.split()))

    def _second_factor(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        pending: OAuthPendingAuthorization,
        client_name: str,
        csrf: str,
        form: Mapping[str, str],
    ) -> None:
        mfa_token = form.get("mfa_token", "")
        if token_hash(mfa_token) != pending.mfa_token_hash:
            pages.render(resp, 403, pages.error("This sign-in expired or the form was not ours."))
            return
        try:
            user = self._sessions.authenticate_mfa(
                mfa_token, form.get("code", ""), client_info(req)
            )
        except errors.InvalidMfaCode:
            message = "The code is wrong or was already used."
            pages.render(resp, 401, pages.mfa(csrf, mfa_token, error=message))
            return
        except errors.LoginThrottled:
            message = "Too many failed attempts; try again later."
            pages.render(resp, 429, pages.mfa(csrf, mfa_token, error=message))
            return
        except errors.InvalidMfaToken:
            pages.render(resp, 401, pages.error("This sign-in expired; start again."))
            return
        self._store.signed_in(pending.id, user.id, " ".join(MFA_AMR))
        pages.render(resp, 200, pages.consent(client_name, csrf, pending.scope.split()))

    def _decide(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        pending: OAuthPendingAuthorization,
        form: Mapping[str, str],
    ) -> None:
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            pages.render(resp, 400, pages.error("Choose to allow or deny."))
            return
        if not self._store.finish_pending(pending.id):
            pages.render(resp, 403, pages.error("This sign-in was already decided."))
            return
        request = _stored_request(pending)
        # NOTE: the stored request is validated again: the client may have changed since.
        query = {name: [value] for name, value in request.query().items()}
        http = _http_request(req, form={}, query=query, method="GET")
        assert pending.user_id is not None and pending.amr and pending.auth_time
        signed_in = SignedIn(pending.user_id, pending.amr, pending.auth_time)
        try:
            grant = self._server.get_consent_grant(http, end_user=signed_in)
        except OAuth2Error as error:
            _authorize_error(resp, self._server.handle_error_response(None, error), 303)
            return
        answer = self._server.create_authorization_response(
            grant.request, grant_user=signed_in if decision == "approve" else None, grant=grant
        )
        _authorize_error(resp, answer, 303)

    # --- the token endpoints ------------------------------------------------------------

    def issue_token(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /oauth/token."""
        self._form_endpoint(req, resp, lambda http: self._server.create_token_response(http))

    def introspect_token(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /oauth/introspect (RFC 7662)."""
        self._form_endpoint(
            req, resp, lambda http: self._server.create_endpoint_response("introspection", http)
        )

    def revoke_token(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /oauth/revoke (RFC 7009)."""
        self._form_endpoint(
            req, resp, lambda http: self._server.create_endpoint_response("revocation", http)
        )

    def _form_endpoint(self, req: falcon.Request, resp: falcon.Response, answer: Any) -> None:
        try:
            form = _read_form(req)
        except FormError as ex:
            _json(resp, 400, {"error": "invalid_request", "error_description": str(ex)})
            return
        try:
            result: OAuthResponse = answer(_http_request(req, form=form))
        except ValueError:
            # NOTE: Authlib refuses to echo non-ASCII input in an error description.
            _json(resp, 400, {"error": "invalid_request"})
            return
        _json_response(resp, result)

    # --- userinfo and discovery ---------------------------------------------------------

    def get_userinfo(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /userinfo: the claims of the signed-in user (an OAuth token with openid)."""
        token = bearer_token(req.get_header("Authorization"))
        claims = self._lookup.access_claims(token) if token else None
        if token is None:
            _bearer_error(resp, 401, None)
            return
        sid = claims.get("sid") if claims else None
        session = self._store.live_session(sid) if isinstance(sid, str) else None
        user = self._store.user(str(claims["sub"])) if claims and session else None
        if claims is None or user is None:
            _bearer_error(resp, 401, "invalid_token")
            return
        scope = str(claims.get("scope", ""))
        if "openid" not in scope.split():
            _bearer_error(resp, 403, "insufficient_scope", scope="openid")
            return
        resp.cache_control = ["no-store"]
        resp.media = dict(user_claims(user.id, user.email, user.full_name, scope))

    def get_openid_configuration(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /.well-known/openid-configuration (OpenID Connect Discovery 1.0)."""
        resp.cache_control = ["public", "max-age=300"]
        resp.media = self._discovery

    def get_authorization_server_metadata(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /.well-known/oauth-authorization-server (RFC 8414)."""
        resp.cache_control = ["public", "max-age=300"]
        resp.media = self._discovery


def discovery_document(issuer: str, public_url: str, scopes: list[str]) -> dict[str, Any]:
    """The provider metadata both discovery documents publish (RFC 8414, OIDC Discovery)."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{public_url}/oauth/authorize",
        "token_endpoint": f"{public_url}/oauth/token",
        "introspection_endpoint": f"{public_url}/oauth/introspect",
        "revocation_endpoint": f"{public_url}/oauth/revoke",
        "userinfo_endpoint": f"{public_url}/userinfo",
        "jwks_uri": f"{public_url}/.well-known/jwks.json",
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256"],
        "claims_supported": ["sub", "email", "name", "auth_time", "amr", "nonce", "at_hash"],
    }


def _stored_request(pending: OAuthPendingAuthorization) -> AuthorizationRequest:
    return AuthorizationRequest(
        client_id=pending.client_id,
        redirect_uri=pending.redirect_uri,
        scope=pending.scope,
        state=pending.state,
        nonce=pending.nonce,
        code_challenge=pending.code_challenge,
        code_challenge_method=pending.code_challenge_method,
    )


def _http_request(
    req: falcon.Request,
    *,
    form: Mapping[str, list[str]],
    query: Mapping[str, list[str]] | None = None,
    method: str | None = None,
) -> HttpRequest:
    if query is None:
        query = urllib.parse.parse_qs(req.query_string, keep_blank_values=True)
    return HttpRequest(
        method=method or req.method,
        uri=req.uri,
        headers={name.title(): value for name, value in req.headers.items()},
        query=query,
        form=form,
        client=client_info(req),
    )


def _read_form(req: falcon.Request) -> dict[str, list[str]]:
    """The urlencoded body; FormError for another media type, oversize or bad text."""
    media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise FormError(f"Send the body as {FORM_MEDIA_TYPE}.")
    raw = req.bounded_stream.read(MAX_FORM_BYTES + 1)
    if len(raw) > MAX_FORM_BYTES:
        raise FormError("The body is too large.")
    try:
        form = urllib.parse.parse_qs(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("The body is not a valid form.") from None
    # NOTE: the database cannot store NUL (the spec's rule for every string).
    if any("\x00" in name or any("\x00" in v for v in values) for name, values in form.items()):
        raise FormError("The form must not contain NUL characters.")
    return form


def _first_values(form: Mapping[str, list[str]]) -> dict[str, str]:
    return {name: values[0] for name, values in form.items() if values}


def _authorize_error(resp: falcon.Response, answer: OAuthResponse, redirect: int) -> None:
    """A redirect from the authorize endpoint (`redirect`: 302 from GET, 303 after a
    form, so the browser follows with GET), or the error page."""
    location = answer.location
    if location is not None:
        resp.status = redirect
        resp.location = location
        resp.cache_control = ["no-store"]
        return
    # SECURITY: an unknown client or an unregistered redirect URI is never redirected to.
    description = "The application's sign-in request is invalid."
    try:
        body = json.loads(answer.body)
        description = str(body.get("error_description") or description)
    except ValueError:
        pass
    pages.render(resp, 400, pages.error(description))


def _json_response(resp: falcon.Response, answer: OAuthResponse) -> None:
    resp.status = answer.status
    for name, value in answer.headers:
        if name.lower() != "content-type":
            resp.set_header(name, value)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = answer.body
    # RFC 6749 §5.1: token responses (and their errors) are never cached.
    resp.cache_control = ["no-store"]
    resp.set_header("Pragma", "no-cache")


def _json(resp: falcon.Response, status: int, body: dict[str, Any]) -> None:
    _json_response(resp, OAuthResponse(status, json.dumps(body), []))


def _bearer_error(
    resp: falcon.Response, status: int, error: str | None, *, scope: str | None = None
) -> None:
    """RFC 6750 §3: the WWW-Authenticate challenge (and a JSON body saying the same)."""
    challenge = 'Bearer realm="authgate"'
    if error:
        challenge += f', error="{error}"'
    if scope:
        challenge += f', scope="{scope}"'
    resp.set_header("WWW-Authenticate", challenge)
    _json(resp, status, {"error": error or "invalid_request"})
