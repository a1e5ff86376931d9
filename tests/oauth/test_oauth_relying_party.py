"""A real relying party (Authlib's OAuth2Session) against the real auth service and the
real gateway, both under gunicorn: authorization code + PKCE through the sign-in and
consent pages, ID token checked against the JWKS, refresh with rotation and reuse
detection, introspection, revocation, client_credentials; and an OAuth token refused by
our own account API."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from gateway_support import Gateway, gateway_before_auth
from jose import jwt
from oauth_support import REDIRECT_URI, RegisteredClient, csrf_token, register_client

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
EMAIL = "grace@example.com"


@pytest.fixture(scope="module")
def auth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the auth service keeps its SQLite database and keys."""
    return tmp_path_factory.mktemp("oauth-rp")


@pytest.fixture(scope="module")
def gateway(auth_root: Path, redis_url: str) -> Iterator[Gateway]:
    """The gateway (default routes) in front of the auth service, one Redis."""
    with gateway_before_auth(auth_root, redis_url, REFRESH_REUSE_GRACE_SECONDS="0") as front:
        yield front


@pytest.fixture(scope="module")
def database(auth_root: Path, gateway: Gateway) -> str:
    """The auth service's database (migrated by the time the gateway is up)."""
    return f"sqlite:///{auth_root / 'auth.db'}"


@pytest.fixture(autouse=True)
def plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authlib's client refuses http:// unless told: the test servers have no TLS."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture(scope="module")
def user(gateway: Gateway) -> str:
    registered = requests.post(
        f"{gateway.url}/api/v1/auth/register",
        json={"email": EMAIL, "password": PASSWORD, "full_name": "Grace Hopper"},
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    return str(registered.json()["id"])


def relying_party(gateway: Gateway, client: RegisteredClient) -> OAuth2Session:
    return OAuth2Session(
        client.client_id,
        client.client_secret,
        scope="openid email profile",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint=f"{gateway.url}/oauth/token",
    )


def sign_in(gateway: Gateway, authorization_url: str) -> str:
    """A person in a browser: the sign-in page, then consent; the redirect it ends on."""
    browser = requests.Session()
    page = browser.get(authorization_url, timeout=30)
    assert page.status_code == 200, page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    csrf = csrf_token(page.text)
    consent = browser.post(
        f"{gateway.url}/oauth/authorize",
        data={"csrf_token": csrf, "email": EMAIL, "password": PASSWORD},
        timeout=30,
    )
    assert consent.status_code == 200, consent.text
    assert 'data-scope="email"' in consent.text
    decided = browser.post(
        f"{gateway.url}/oauth/authorize",
        data={"csrf_token": csrf, "decision": "approve"},
        allow_redirects=False,
        timeout=30,
    )
    assert decided.status_code == 303, decided.text
    return str(decided.headers["Location"])


def test_code_flow_refresh_introspect_revoke(gateway: Gateway, database: str, user: str) -> None:
    client = register_client(database)
    rp = relying_party(gateway, client)
    verifier = uuid.uuid4().hex + uuid.uuid4().hex
    nonce = uuid.uuid4().hex
    url, state = rp.create_authorization_url(
        f"{gateway.url}/oauth/authorize", code_verifier=verifier, nonce=nonce
    )
    callback = sign_in(gateway, url)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query)["state"] == [state]
    token = rp.fetch_token(authorization_response=callback, code_verifier=verifier)
    jwks = requests.get(f"{gateway.url}/.well-known/jwks.json", timeout=30).json()
    id_claims = jwt.decode(
        token["id_token"],
        jwks,
        audience=client.client_id,
        issuer="authgate",
        access_token=token["access_token"],  # the at_hash check
    )
    assert id_claims["nonce"] == nonce
    assert id_claims["sub"] == user
    assert id_claims["email"] == EMAIL
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    info = requests.get(f"{gateway.url}/userinfo", headers=bearer, timeout=30)
    assert info.status_code == 200, info.text
    assert info.json()["email"] == EMAIL
    # SECURITY: our own account API refuses an OAuth token, even through the gateway.
    me = requests.get(f"{gateway.url}/api/v1/auth/me", headers=bearer, timeout=30)
    assert me.status_code == 401
    about = rp.introspect_token(f"{gateway.url}/oauth/introspect", token=token["access_token"])
    assert about.status_code == 200
    assert about.json()["active"] is True
    assert about.json()["client_id"] == client.client_id
    # Refresh rotates; the old refresh token used again ends the whole grant.
    first_refresh = token["refresh_token"]
    rotated = rp.refresh_token(f"{gateway.url}/oauth/token", refresh_token=first_refresh)
    assert rotated["refresh_token"] != first_refresh
    with pytest.raises(OAuthError, match="invalid_grant"):
        rp.refresh_token(f"{gateway.url}/oauth/token", refresh_token=first_refresh)
    with pytest.raises(OAuthError, match="invalid_grant"):
        rp.refresh_token(f"{gateway.url}/oauth/token", refresh_token=rotated["refresh_token"])
    gone = rp.introspect_token(
        f"{gateway.url}/oauth/introspect", token=rotated["access_token"]
    ).json()
    assert gone == {"active": False}


def test_revocation_ends_the_grant(gateway: Gateway, database: str, user: str) -> None:
    client = register_client(database, client_type="public")
    rp = relying_party(gateway, client)
    verifier = uuid.uuid4().hex + uuid.uuid4().hex
    url, _ = rp.create_authorization_url(f"{gateway.url}/oauth/authorize", code_verifier=verifier)
    token = rp.fetch_token(authorization_response=sign_in(gateway, url), code_verifier=verifier)
    revoked = rp.revoke_token(
        f"{gateway.url}/oauth/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
    )
    assert revoked.status_code == 200
    with pytest.raises(OAuthError, match="invalid_grant"):
        rp.refresh_token(f"{gateway.url}/oauth/token", refresh_token=token["refresh_token"])
    info = requests.get(
        f"{gateway.url}/userinfo",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=30,
    )
    assert info.status_code == 401


def test_client_credentials(gateway: Gateway, database: str) -> None:
    machine = register_client(database, grant_types=("client_credentials",), scopes=("openid",))
    rp = OAuth2Session(machine.client_id, machine.client_secret, scope="openid")
    token = rp.fetch_token(f"{gateway.url}/oauth/token", grant_type="client_credentials")
    claims = jwt.get_unverified_claims(token["access_token"])
    assert claims["sub"] == machine.client_id
    assert "sid" not in claims
    assert "role" not in claims
    wrong = OAuth2Session(machine.client_id, "not-the-secret", scope="openid")
    with pytest.raises(OAuthError, match="invalid_client"):
        wrong.fetch_token(f"{gateway.url}/oauth/token", grant_type="client_credentials")


def test_discovery_through_the_gateway(gateway: Gateway) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        doc = requests.get(f"{gateway.url}{path}", timeout=30)
        assert doc.status_code == 200, doc.text
        assert doc.json()["code_challenge_methods_supported"] == ["S256"]


def test_error_pages_pass_the_gateway(gateway: Gateway, database: str, user: str) -> None:
    """The pages' 400/401/403 are HTML the spec declares: the gateway relays them as sent."""
    client = register_client(database)
    rp = relying_party(gateway, client)
    url, _ = rp.create_authorization_url(
        f"{gateway.url}/oauth/authorize", code_verifier=uuid.uuid4().hex * 2
    )
    browser = requests.Session()
    csrf = csrf_token(browser.get(url, timeout=30).text)
    wrong = browser.post(
        f"{gateway.url}/oauth/authorize",
        data={"csrf_token": csrf, "email": EMAIL, "password": "not the password"},
        timeout=30,
    )
    assert wrong.status_code == 401
    assert wrong.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'id="error"' in wrong.text
    assert 'id="sign-in"' in wrong.text
    forged = browser.post(
        f"{gateway.url}/oauth/authorize",
        data={"csrf_token": "forged", "email": EMAIL, "password": PASSWORD},
        timeout=30,
    )
    assert forged.status_code == 403
    assert forged.headers["X-Frame-Options"] == "DENY"
    unknown = requests.get(
        url.replace(client.client_id, "no-such-client"), allow_redirects=False, timeout=30
    )
    assert unknown.status_code == 400
    assert "Location" not in unknown.headers
    assert 'id="error"' in unknown.text
