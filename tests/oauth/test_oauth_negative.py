"""What the provider refuses (PostgreSQL and SQLite): bad requests, PKCE, secrets, scopes,
forged forms; and the pages' wrong-password, MFA and deny paths; client_credentials,
introspection and revocation."""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

import pyotp
import sqlalchemy
from auth_api import PASSWORD, Api
from authcheck import rows
from falcon import testing
from oauth_support import (
    REDIRECT_URI,
    assert_page_headers,
    authorize_query,
    csrf_token,
    mfa_token,
    pkce_pair,
    register_client,
)
from test_oauth_flow import EMAIL, Browser, exchange, sign_in_and_approve, token_request

from auth_service.db.models import AuditEvent, TotpCredential

NATIVE = "http://127.0.0.1/callback"


def redirect_params(result: testing.Result) -> dict[str, list[str]]:
    assert result.status_code in (302, 303), result.text
    location = result.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)


def test_unregistered_redirect_uri_is_an_error_page_never_a_redirect(
    client: testing.TestClient, database_url: str
) -> None:
    registered = register_client(database_url)
    _, challenge = pkce_pair()
    query = authorize_query(registered.client_id, challenge, redirect_uri="https://evil.example/")
    page = Browser(client).get(query)
    assert page.status_code == 400
    assert "location" not in page.headers
    assert_page_headers(page.headers)
    assert 'id="error"' in page.text
    unknown = Browser(client).get(authorize_query("no-such-client", challenge))
    assert unknown.status_code == 400
    assert "location" not in unknown.headers


def test_missing_or_plain_pkce_is_redirected_as_invalid_request(
    client: testing.TestClient, database_url: str
) -> None:
    registered = register_client(database_url)
    verifier, challenge = pkce_pair()
    query = authorize_query(registered.client_id, challenge)
    del query["code_challenge"], query["code_challenge_method"]
    missing = redirect_params(Browser(client).get(query))
    assert missing["error"] == ["invalid_request"]
    assert missing["state"] == ["state-123"]
    plain = authorize_query(registered.client_id, verifier, code_challenge_method="plain")
    assert redirect_params(Browser(client).get(plain))["error"] == ["invalid_request"]


def test_scope_beyond_the_client_is_invalid_scope(
    client: testing.TestClient, database_url: str
) -> None:
    registered = register_client(database_url, scopes=("openid",))
    _, challenge = pkce_pair()
    query = authorize_query(registered.client_id, challenge, scope="openid email")
    assert redirect_params(Browser(client).get(query))["error"] == ["invalid_scope"]


def test_wrong_verifier_secret_and_public_client_without_verifier(
    client: testing.TestClient, api: Api, database_url: str
) -> None:
    api.register(EMAIL)
    confidential = register_client(database_url)
    verifier, challenge = pkce_pair()
    code = sign_in_and_approve(client, confidential, challenge)["code"][0]
    bad_secret = token_request(
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        headers={
            "Authorization": "Basic "
            + base64.b64encode(f"{confidential.client_id}:wrong".encode()).decode()
        },
    )
    assert bad_secret.status_code == 401
    assert bad_secret.json["error"] == "invalid_client"
    wrong_verifier = exchange(client, confidential, code, pkce_pair()[0])
    assert wrong_verifier.status_code == 400
    assert wrong_verifier.json["error"] == "invalid_grant"
    public = register_client(database_url, client_type="public")
    verifier, challenge = pkce_pair()
    code = sign_in_and_approve(client, public, challenge)["code"][0]
    no_verifier = token_request(
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": public.client_id,
        },
    )
    assert no_verifier.status_code == 400
    assert no_verifier.json["error"] == "invalid_request"


def test_forged_csrf_wrong_password_and_deny(
    client: testing.TestClient, api: Api, database_url: str
) -> None:
    api.register(EMAIL)
    registered = register_client(database_url)
    _, challenge = pkce_pair()
    browser = Browser(client)
    csrf = csrf_token(browser.get(authorize_query(registered.client_id, challenge)).text)
    forged = browser.post({"csrf_token": "forged", "email": EMAIL, "password": PASSWORD})
    assert forged.status_code == 403
    assert_page_headers(forged.headers)
    wrong = browser.post({"csrf_token": csrf, "email": EMAIL, "password": "wrong password"})
    assert wrong.status_code == 401
    assert 'id="error"' in wrong.text
    assert 'id="sign-in"' in wrong.text
    assert (
        browser.post({"csrf_token": csrf, "email": EMAIL, "password": PASSWORD}).status_code == 200
    )
    denied = browser.post({"csrf_token": csrf, "decision": "deny"})
    assert denied.status_code == 303
    denial = redirect_params(denied)
    assert denial["error"] == ["access_denied"]
    assert denial["state"] == ["state-123"]
    assert "code" not in denial


def test_mfa_step_before_consent(client: testing.TestClient, api: Api, database_url: str) -> None:
    user = api.register(EMAIL).json
    tokens = api.login(EMAIL).json
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    started = client.simulate_post(
        "/api/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=auth
    )
    assert started.status_code == 200, started.text
    secret = started.json["secret"]
    confirmed = client.simulate_post(
        "/api/v1/auth/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=auth
    )
    assert confirmed.status_code == 200, confirmed.text
    registered = register_client(database_url)
    verifier, challenge = pkce_pair()
    browser = Browser(client)
    csrf = csrf_token(browser.get(authorize_query(registered.client_id, challenge)).text)
    step = browser.post({"csrf_token": csrf, "email": EMAIL, "password": PASSWORD})
    assert step.status_code == 200
    assert 'id="mfa"' in step.text
    token = mfa_token(step.text)
    wrong = browser.post({"csrf_token": csrf, "mfa_token": token, "code": "000000"})
    assert wrong.status_code == 401
    assert 'id="error"' in wrong.text
    # NOTE: the enrolment's code used its time step; the next one is accepted.
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.update(TotpCredential).values(last_used_step=None))
    engine.dispose()
    code = pyotp.TOTP(secret).now()
    consent = browser.post({"csrf_token": csrf, "mfa_token": token, "code": code})
    assert consent.status_code == 200, consent.text
    assert 'id="consent"' in consent.text
    params = redirect_params(browser.post({"csrf_token": csrf, "decision": "approve"}))
    issued = exchange(client, registered, params["code"][0], verifier)
    assert issued.status_code == 200
    assert user["email"] == EMAIL


def test_client_credentials_introspection_and_revocation(
    client: testing.TestClient, api: Api, database_url: str
) -> None:
    machine = register_client(database_url, grant_types=("client_credentials",), scopes=("openid",))
    basic = base64.b64encode(f"{machine.client_id}:{machine.client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    issued = token_request(
        client, {"grant_type": "client_credentials", "scope": "openid"}, headers=headers
    )
    assert issued.status_code == 200, issued.text
    assert "refresh_token" not in issued.json
    escalated = token_request(
        client, {"grant_type": "client_credentials", "scope": "email"}, headers=headers
    )
    assert escalated.json["error"] == "invalid_scope"
    token = issued.json["access_token"]

    def introspect(value: str) -> dict[str, object]:
        result = client.simulate_post(
            "/oauth/introspect",
            body=urllib.parse.urlencode({"token": value}),
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        assert result.status_code == 200, result.text
        return dict(result.json)

    about = introspect(token)
    assert about["active"] is True
    assert about["sub"] == machine.client_id
    assert about["client_id"] == machine.client_id
    assert introspect("not-a-token") == {"active": False}
    # A user's grant: revoking its refresh token ends the session and its access token.
    api.register(EMAIL)
    app = register_client(database_url)
    app_basic = base64.b64encode(f"{app.client_id}:{app.client_secret}".encode()).decode()
    verifier, challenge = pkce_pair()
    tokens = exchange(
        client, app, sign_in_and_approve(client, app, challenge)["code"][0], verifier
    ).json
    revoked = client.simulate_post(
        "/oauth/revoke",
        body=urllib.parse.urlencode({"token": tokens["refresh_token"]}),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {app_basic}",
        },
    )
    assert revoked.status_code == 200, revoked.text
    info = client.simulate_get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 401
    assert 'error="invalid_token"' in info.headers["www-authenticate"]
    # The machine client may not learn about another client's tokens.
    assert introspect(tokens["access_token"]) == {"active": False}


def test_discovery_documents(client: testing.TestClient) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        doc = client.simulate_get(path).json
        assert doc["issuer"] == "authgate"
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["token_endpoint"] == "http://127.0.0.1:8000/oauth/token"
        assert "implicit" not in doc["grant_types_supported"]
        assert "password" not in doc["grant_types_supported"]


def test_sign_in_page_shares_the_login_throttle(make_client: Any, database_url: str) -> None:
    """Wrong passwords on the page count like failed logins: then a 429 page, no consent."""
    client = make_client(login_max_failures=2)
    Api(client).register(EMAIL)
    registered = register_client(database_url)
    _, challenge = pkce_pair()
    browser = Browser(client)
    csrf = csrf_token(browser.get(authorize_query(registered.client_id, challenge)).text)
    for _ in range(2):
        wrong = browser.post({"csrf_token": csrf, "email": EMAIL, "password": "wrong password"})
        assert wrong.status_code == 401
    throttled = browser.post({"csrf_token": csrf, "email": EMAIL, "password": PASSWORD})
    assert throttled.status_code == 429
    assert_page_headers(throttled.headers)
    assert 'id="error"' in throttled.text
    assert 'id="consent"' not in throttled.text
    # The JSON login of the same account is throttled as well: one counter.
    assert Api(client).login(EMAIL).status_code == 429


def test_sign_in_page_requires_a_verified_address_when_configured(
    make_client: Any, database_url: str
) -> None:
    """REQUIRE_EMAIL_VERIFICATION holds on the pages as at login: after the right password
    only (a wrong one is the ordinary 401), and no consent is offered."""
    client = make_client(require_email_verification=True)
    assert Api(client).register(EMAIL).status_code == 202
    registered = register_client(database_url)
    _, challenge = pkce_pair()
    browser = Browser(client)
    csrf = csrf_token(browser.get(authorize_query(registered.client_id, challenge)).text)
    wrong = browser.post({"csrf_token": csrf, "email": EMAIL, "password": "wrong password"})
    assert wrong.status_code == 401
    refused = browser.post({"csrf_token": csrf, "email": EMAIL, "password": PASSWORD})
    assert refused.status_code == 403
    assert_page_headers(refused.headers)
    assert 'id="error"' in refused.text and "Verify your email address" in refused.text
    assert 'id="consent"' not in refused.text


def test_a_sign_in_on_the_pages_is_audited(
    client: testing.TestClient, api: Api, database_url: str
) -> None:
    api.register(EMAIL)
    _, challenge = pkce_pair()
    sign_in_and_approve(client, register_client(database_url), challenge)
    events = [
        (row.event_type, row.details)
        for row in rows(
            database_url,
            sqlalchemy.select(AuditEvent.__table__).where(
                AuditEvent.event_type == "login.succeeded"
            ),
        )
    ]
    assert events == [("login.succeeded", {"amr": ["pwd"], "during": "oauth.authorize"})]


def test_a_loopback_redirect_may_name_any_port(
    client: testing.TestClient, api: Api, database_url: str
) -> None:
    """RFC 8252 §7.3: a native app registers http://127.0.0.1/callback and listens on the
    port the OS gives it; everything but that port still matches exactly."""
    api.register(EMAIL)
    registered = register_client(database_url, client_type="public", redirect_uris=(NATIVE,))
    verifier, challenge = pkce_pair()
    for refused in (
        "http://127.0.0.1:54321/other",
        "http://user@127.0.0.1:54321/callback",
        "https://127.0.0.1:54321/callback",
        "http://127.0.0.2:54321/callback",
    ):
        page = Browser(client).get(
            authorize_query(registered.client_id, challenge, redirect_uri=refused)
        )
        assert page.status_code == 400, refused
        assert "location" not in page.headers
    redirect_uri = "http://127.0.0.1:54321/callback"
    browser = Browser(client)
    page = browser.get(authorize_query(registered.client_id, challenge, redirect_uri=redirect_uri))
    assert page.status_code == 200, page.text
    csrf = csrf_token(page.text)
    assert (
        browser.post({"csrf_token": csrf, "email": EMAIL, "password": PASSWORD}).status_code == 200
    )
    done = browser.post({"csrf_token": csrf, "decision": "approve"})
    assert done.status_code == 303
    location = urllib.parse.urlsplit(done.headers["location"])
    assert (location.netloc, location.path) == ("127.0.0.1:54321", "/callback")
    code = urllib.parse.parse_qs(location.query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": registered.client_id,
    }
    # The token request must name the redirect URI the code was issued for, port included.
    wrong = token_request(client, {**form, "redirect_uri": NATIVE})
    assert wrong.status_code == 400 and wrong.json["error"] == "invalid_grant"
    tokens = token_request(client, {**form, "redirect_uri": redirect_uri})
    assert tokens.status_code == 200, tokens.text


def test_localhost_gets_no_port_leeway(
    client: testing.TestClient, api: Api, database_url: str
) -> None:
    """Only IP literals: `localhost` could resolve elsewhere (RFC 8252 §8.3)."""
    registered = register_client(database_url, redirect_uris=("http://localhost/callback",))
    _, challenge = pkce_pair()
    page = Browser(client).get(
        authorize_query(
            registered.client_id, challenge, redirect_uri="http://localhost:54321/callback"
        )
    )
    assert page.status_code == 400
    assert "location" not in page.headers
