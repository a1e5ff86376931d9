"""The authorization code flow in-process (PostgreSQL and SQLite): pages, code, tokens."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from typing import Any

import sqlalchemy
from auth_api import PASSWORD, Api
from falcon import testing
from jose import jwt
from oauth_support import (
    REDIRECT_URI,
    RegisteredClient,
    assert_page_headers,
    authorize_query,
    csrf_token,
    pkce_pair,
    register_client,
)

from auth_service.db.base import utcnow
from auth_service.db.models import AuditEvent, OAuthAuthorizationCode, Session, SessionRevocation
from auth_service.settings import Settings

EMAIL = "ada@example.com"


class Browser:
    """Drives the authorize pages like a browser: one cookie jar, forms posted back."""

    def __init__(self, client: testing.TestClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}

    def get(self, query: dict[str, str]) -> testing.Result:
        result = self.client.simulate_get("/oauth/authorize", params=query, cookies=self.cookies)
        self.cookies.update({name: c.value for name, c in result.cookies.items()})
        return result

    def post(self, form: dict[str, str]) -> testing.Result:
        return self.client.simulate_post(
            "/oauth/authorize",
            body=urllib.parse.urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            cookies=self.cookies,
        )


def sign_in_and_approve(
    client: testing.TestClient, registered: RegisteredClient, challenge: str, **extra: Any
) -> dict[str, list[str]]:
    """GET authorize, sign in, approve; the redirect's query parameters."""
    browser = Browser(client)
    page = browser.get(authorize_query(registered.client_id, challenge, **extra))
    assert page.status_code == 200, page.text
    assert_page_headers(page.headers)
    csrf = csrf_token(page.text)
    consent = browser.post({"csrf_token": csrf, "email": EMAIL, "password": PASSWORD})
    assert consent.status_code == 200, consent.text
    assert 'id="consent"' in consent.text
    assert 'data-scope="openid"' in consent.text
    done = browser.post({"csrf_token": csrf, "decision": "approve"})
    assert done.status_code == 303, done.text
    location = done.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)


def token_request(client: testing.TestClient, form: dict[str, str], **kw: Any) -> testing.Result:
    return client.simulate_post(
        "/oauth/token",
        body=urllib.parse.urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded", **kw.get("headers", {})},
    )


def exchange(
    client: testing.TestClient, registered: RegisteredClient, code: str, verifier: str
) -> testing.Result:
    return token_request(
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": registered.client_id,
            "client_secret": registered.client_secret or "",
        },
    )


def test_code_flow_issues_rfc9068_access_and_id_tokens(
    client: testing.TestClient, api: Api, database_url: str, settings: Settings
) -> None:
    api.register(EMAIL, full_name="Ada Lovelace")
    registered = register_client(database_url)
    verifier, challenge = pkce_pair()
    params = sign_in_and_approve(client, registered, challenge)
    assert params["state"] == ["state-123"]
    tokens = exchange(client, registered, params["code"][0], verifier)
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["cache-control"] == "no-store"
    body = tokens.json
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == {"openid", "email", "profile"}
    jwks = client.simulate_get("/.well-known/jwks.json").json
    header = jwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["kid"] == jwks["keys"][0]["kid"]
    access = jwt.decode(
        body["access_token"], jwks, audience=settings.jwt_audience, issuer=settings.jwt_issuer
    )
    assert access["client_id"] == registered.client_id
    assert access["role"] == "user"
    assert access["amr"] == ["pwd"]
    assert isinstance(access["auth_time"], int)
    id_claims = jwt.decode(
        body["id_token"],
        jwks,
        audience=registered.client_id,
        issuer=settings.jwt_issuer,
        access_token=body["access_token"],  # python-jose checks at_hash with it
    )
    assert id_claims["nonce"] == "nonce-456"
    assert id_claims["sub"] == access["sub"]
    assert id_claims["email"] == EMAIL
    assert id_claims["name"] == "Ada Lovelace"
    assert id_claims["amr"] == ["pwd"]
    digest = hashlib.sha256(body["access_token"].encode()).digest()[:16]
    assert id_claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    # The grant opened a session of this client, so session revocation applies to it.
    engine = sqlalchemy.create_engine(database_url)
    with engine.connect() as connection:
        row = connection.execute(sqlalchemy.select(Session)).one()
    engine.dispose()
    assert str(row.id) == access["sid"]
    assert row.client_id == registered.client_id
    # SECURITY: an OAuth token never acts on the account API.
    me = client.simulate_get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 401
    info = client.simulate_get(
        "/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert info.status_code == 200, info.text
    assert info.json == {"sub": access["sub"], "email": EMAIL, "name": "Ada Lovelace"}


def test_code_reuse_revokes_what_the_code_issued(
    client: testing.TestClient, api: Api, database_url: str
) -> None:
    api.register(EMAIL)
    registered = register_client(database_url)
    verifier, challenge = pkce_pair()
    code = sign_in_and_approve(client, registered, challenge)["code"][0]
    first = exchange(client, registered, code, verifier)
    assert first.status_code == 200
    again = exchange(client, registered, code, verifier)
    assert again.status_code == 400
    assert again.json["error"] == "invalid_grant"
    refreshed = token_request(
        client,
        {
            "grant_type": "refresh_token",
            "refresh_token": first.json["refresh_token"],
            "client_id": registered.client_id,
            "client_secret": registered.client_secret or "",
        },
    )
    assert refreshed.status_code == 400
    assert refreshed.json["error"] == "invalid_grant"
    info = client.simulate_get(
        "/userinfo", headers={"Authorization": f"Bearer {first.json['access_token']}"}
    )
    assert info.status_code == 401


def test_expired_code_is_refused(client: testing.TestClient, api: Api, database_url: str) -> None:
    api.register(EMAIL)
    registered = register_client(database_url)
    verifier, challenge = pkce_pair()
    code = sign_in_and_approve(client, registered, challenge)["code"][0]
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.update(OAuthAuthorizationCode).values(expires_at=utcnow()))
    engine.dispose()
    expired = exchange(client, registered, code, verifier)
    assert expired.status_code == 400
    assert expired.json["error"] == "invalid_grant"


def test_refresh_rotates_and_reuse_ends_the_session(make_client: Any, database_url: str) -> None:
    # NOTE: no grace: the second use of a rotated token is reuse at once.
    client = make_client(refresh_reuse_grace_seconds=0)
    Api(client).register(EMAIL)
    registered = register_client(database_url, client_type="public")
    verifier, challenge = pkce_pair()
    code = sign_in_and_approve(client, registered, challenge)["code"][0]
    first = exchange(client, registered, code, verifier)
    assert first.status_code == 200, first.text
    form = {"grant_type": "refresh_token", "client_id": registered.client_id}
    rotated = token_request(client, {**form, "refresh_token": first.json["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json["refresh_token"] != first.json["refresh_token"]
    reused = token_request(client, {**form, "refresh_token": first.json["refresh_token"]})
    assert reused.status_code == 400
    assert reused.json["error"] == "invalid_grant"
    # SECURITY: reuse means the token leaked: the newer token dies with the session.
    newer = token_request(client, {**form, "refresh_token": rotated.json["refresh_token"]})
    assert newer.json["error"] == "invalid_grant"


def test_deleting_the_client_ends_the_sessions_of_its_grants(
    client: testing.TestClient, api: Api, database_url: str
) -> None:
    api.register(EMAIL)
    own = api.login(EMAIL)  # a first-party session of the same user, which must survive
    registered = register_client(database_url)
    verifier, challenge = pkce_pair()
    code = sign_in_and_approve(client, registered, challenge)["code"][0]
    tokens = exchange(client, registered, code, verifier).json
    admin = {"Authorization": f"Bearer {api.admin(database_url)['access_token']}"}
    gone = client.simulate_delete(f"/api/v1/oauth-clients/{registered.client_id}", headers=admin)
    assert gone.status_code == 204, gone.text

    info = client.simulate_get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 401
    engine = sqlalchemy.create_engine(database_url)
    with engine.connect() as connection:
        grant = connection.execute(
            sqlalchemy.select(Session).where(Session.client_id == registered.client_id)
        ).one()
        fed = connection.execute(sqlalchemy.select(SessionRevocation.session_id)).scalars().all()
        deleted = connection.execute(
            sqlalchemy.select(AuditEvent.details).where(
                AuditEvent.event_type == "oauth_client.deleted"
            )
        ).scalar_one()
    engine.dispose()
    assert grant.revoked_at is not None
    assert fed == [grant.id]  # the gateway's revocation feed learns it too
    assert deleted == {"client_id": registered.client_id, "sessions_revoked": 1}
    me = client.simulate_get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {own.json['access_token']}"}
    )
    assert me.status_code == 200
