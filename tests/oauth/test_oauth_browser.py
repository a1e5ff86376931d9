"""The OAuth sign-in and consent pages in a real browser, through the real gateway.

A headless Chromium (tests/oauth/browser.py) opens /oauth/authorize as a client application
would send a user there (authorization code + PKCE S256), signs in, passes the second factor
when the user has one, and approves or denies; the client application is a loopback
server at the registered redirect URI, so the browser really has to land there. The code
it brings is exchanged at POST /oauth/token, which proves it is a real one. The stack is
the auth service and the gateway under gunicorn, on PostgreSQL and Redis; the client is a
row in `oauth_clients` (as the admin API stores it), the users are made through the API.

What the tests rely on of the pages (ids and names, statuses, headers): the sign-in form
`form#sign-in` (`email`, `password`, `#sign-in-submit`; a wrong password answers 401 with
it again), the second factor `form#mfa` (`code`, `#mfa-submit`), the consent form
`form#consent` listing `#scopes li[data-scope]` with `#approve` and `#deny`; every form a
hidden `csrf_token` (missing or not this browser's: 403); errors in `#error`
(role="alert"); an unknown client or redirect URI answers 400, never a redirect; every
page `no-store`, `frame-ancestors 'none'` and `X-Frame-Options: DENY`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyotp
import pytest
import requests
import sqlalchemy
from browser import Browser, Receiver, start_browser
from jose import jwt
from process_support import REPO
from sqlalchemy.orm import Session as DbSession

from auth_service.db.models import OAuthClient

sys.path.insert(0, str(REPO / "tests" / "gateway"))  # the gateway launcher of its tests
from gateway_support import Gateway, gateway_before_auth

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
SCOPES = ["openid", "profile", "email"]
CLIENT_NAME = "Browser test app"


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The gateway in front of the auth service, and the client registered with it."""

    gateway: Gateway
    client_id: str
    client_secret: str
    redirect_uri: str

    @property
    def url(self) -> str:
        """The gateway's base URL: everything goes through it, as in production."""
        return str(self.gateway.url)

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        """Call the auth service's JSON API through the gateway."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(
            method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kw
        )


@pytest.fixture(scope="module")
def oauth_database(postgres_server: str) -> Iterator[str]:
    """A database of this module's own on the real PostgreSQL, dropped afterwards."""
    name = f"test_oauth_browser_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sqlalchemy.engine.make_url(postgres_server).set(database=name))
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    oauth_database: str,
    redis_url: str,
    receiver: Receiver,
) -> Iterator[Stack]:
    """Auth service (two workers) and gateway under gunicorn, with one registered client."""
    root = tmp_path_factory.mktemp("oauth-browser")
    with gateway_before_auth(root, redis_url, workers=2, DATABASE_URL=oauth_database) as gateway:
        client_id, secret = register_client(oauth_database, receiver.redirect_uri)
        yield Stack(gateway, client_id, secret, receiver.redirect_uri)


def register_client(database_url: str, redirect_uri: str) -> tuple[str, str]:
    """A confidential client row, stored as the admin API stores one: its id and secret."""
    client_id = f"browser-test-{uuid.uuid4().hex[:8]}"
    secret = secrets.token_urlsafe(32)
    engine = sqlalchemy.create_engine(database_url)
    try:
        with DbSession(engine) as db, db.begin():
            db.add(
                OAuthClient(
                    client_id=client_id,
                    client_secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
                    name=CLIENT_NAME,
                    client_type="confidential",
                    redirect_uris=[redirect_uri],
                    grant_types=["authorization_code", "refresh_token"],
                    scopes=["openid", "profile", "email", "offline_access"],
                )
            )
    finally:
        engine.dispose()
    return client_id, secret


@pytest.fixture(autouse=True)
def no_arrivals_yet(receiver: Receiver) -> None:
    """Each test sees only the browser visits it caused at the redirect URI."""
    receiver.clear()


# --------------------------------------------------------------------------- users


@dataclass
class User:
    """An account made through the API; `totp` when it has the second factor on."""

    id: str
    email: str
    totp: pyotp.TOTP | None = None


@pytest.fixture
def user(stack: Stack) -> User:
    """A fresh account (fresh each test: nothing remembered from another test's consent)."""
    return new_user(stack)


@pytest.fixture
def mfa_user(stack: Stack) -> User:
    """A fresh account with TOTP enrolled and confirmed through the API."""
    account = new_user(stack)
    login = stack.api("POST", "/auth/login", json={"email": account.email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    started = stack.api("POST", "/auth/mfa/totp", token, json={"password": PASSWORD})
    assert started.status_code == 200, started.text
    totp = pyotp.TOTP(started.json()["secret"])
    confirmed = stack.api("POST", "/auth/mfa/totp/confirm", token, json={"code": totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    return User(account.id, account.email, totp)


def new_user(stack: Stack) -> User:
    email = f"browser-{uuid.uuid4().hex[:12]}@example.com"
    created = stack.api("POST", "/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return User(str(created.json()["id"]), email)


def unused_totp_code(totp: pyotp.TOTP) -> str:
    """A code the server accepts once: the next time step's (confirmation used this one's)."""
    return str(totp.at(time.time() + 30))


def wrong_totp_code(totp: pyotp.TOTP) -> str:
    """Six digits that are no step's code within the server's drift window (and then some)."""
    near = {totp.at(time.time() + 30 * offset) for offset in range(-3, 4)}
    return next(code for code in (f"{n:06d}" for n in range(1000)) if code not in near)


# --------------------------------------------------------------------------- the flow


@dataclass
class Authorization:
    """One authorization request: PKCE verifier, state and nonce the client keeps."""

    url: str
    state: str
    verifier: str


def authorization(
    stack: Stack, scopes: list[str] = SCOPES, redirect_uri: str | None = None, pkce: bool = True
) -> Authorization:
    """A fresh authorization request URL (PKCE S256), as a client application builds it."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": stack.client_id,
        "redirect_uri": redirect_uri or stack.redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "nonce": secrets.token_urlsafe(16),
    }
    if not pkce:
        del query["code_challenge"], query["code_challenge_method"]
    return Authorization(f"{stack.url}/oauth/authorize?{urlencode(query)}", state, verifier)


def fill_in(browser: Browser, css: str, value: str) -> None:
    field = browser.wait_for(css)
    field.clear()
    field.send_keys(value)


def sign_in(browser: Browser, email: str, password: str = PASSWORD) -> None:
    """Fill in and send the sign-in form the browser is on."""
    browser.wait_for("form#sign-in")
    fill_in(browser, "form#sign-in input[name='email']", email)
    fill_in(browser, "form#sign-in input[name='password']", password)
    browser.click_and_wait_for_next_page("#sign-in-submit")


def second_factor(browser: Browser, code: str) -> None:
    """Fill in and send the MFA form the browser is on."""
    fill_in(browser, "form#mfa input[name='code']", code)
    browser.click_and_wait_for_next_page("#mfa-submit")


def listed_scopes(browser: Browser) -> list[str]:
    """The scopes the consent page asks the user to grant, in page order."""
    browser.wait_for("form#consent")
    return [item.get_attribute("data-scope") or "" for item in browser.find_all("#scopes li")]


def shows_error(browser: Browser) -> str:
    """The page's error message (id="error", role="alert"); fails when there is none."""
    error = browser.wait_for("#error")
    assert error.get_attribute("role") == "alert"
    assert error.text.strip(), "the error element is empty"
    return str(error.text)


def set_csrf_token(browser: Browser, form: str, value: str | None) -> None:
    """Overwrite (or, with None, remove) the hidden csrf_token of a form on the page."""
    field = browser.wait_for(f"form#{form} input[name='csrf_token']")
    assert field.get_attribute("type") == "hidden"
    assert field.get_attribute("value"), "the form carries an empty CSRF token"
    if value is None:
        browser.driver.execute_script("arguments[0].remove();", field)
    else:
        browser.driver.execute_script("arguments[0].value = arguments[1];", field, value)


def exchange(stack: Stack, code: str, verifier: str) -> requests.Response:
    """The client application's back-channel call: the code for tokens (client_secret_basic)."""
    return requests.post(
        f"{stack.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": stack.redirect_uri,
            "code_verifier": verifier,
        },
        auth=(stack.client_id, stack.client_secret),
        timeout=30,
    )


def assert_still_on_our_pages(browser: Browser, stack: Stack, receiver: Receiver) -> None:
    """No redirect happened: the browser is on the gateway, the client saw nothing."""
    assert browser.url.startswith(stack.url + "/oauth/"), browser.url
    assert receiver.arrivals == []


# --------------------------------------------------------------------------- the tests


def test_sign_in_and_consent_land_on_the_redirect_uri_with_a_code_that_works(
    browser: Browser, stack: Stack, receiver: Receiver, user: User
) -> None:
    request = authorization(stack)
    browser.open(request.url)
    browser.wait_for("form#sign-in")
    assert browser.status() == 200
    password = browser.wait_for("form#sign-in input[name='password']")
    assert password.get_attribute("type") == "password"
    assert not browser.has("#error")

    sign_in(browser, user.email)
    assert browser.status() == 200
    assert sorted(listed_scopes(browser)) == sorted(SCOPES)
    assert CLIENT_NAME in browser.wait_for("body").text  # the user sees who asks
    assert not browser.has("form#mfa")
    assert receiver.arrivals == []  # nothing reaches the client before the user decides

    browser.click_and_wait_for_next_page("#approve")
    arrival = receiver.wait_for_arrival()
    assert browser.url.startswith(stack.redirect_uri + "?"), browser.url
    assert browser.wait_for("#received")  # the client application's page is on screen
    assert arrival.one("state") == request.state
    assert "error" not in arrival.query
    code = arrival.one("code")

    tokens = exchange(stack, code, request.verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"].lower() == "bearer"
    claims = jwt.get_unverified_claims(body["access_token"])
    assert claims["sub"] == user.id  # the code stands for the user who signed in
    assert claims["client_id"] == stack.client_id
    assert set(claims["scope"].split()) == set(SCOPES)
    assert "id_token" in body  # openid was granted


def test_wrong_password_stays_on_the_sign_in_page_with_an_error(
    browser: Browser, stack: Stack, receiver: Receiver, user: User
) -> None:
    request = authorization(stack)
    browser.open(request.url)
    sign_in(browser, user.email, "not the password")

    assert browser.status() == 401
    shows_error(browser)
    assert browser.has("form#sign-in")
    assert not browser.has("form#consent")
    assert_still_on_our_pages(browser, stack, receiver)

    # The re-rendered form still works: the right password now signs the user in.
    sign_in(browser, user.email)
    assert sorted(listed_scopes(browser)) == sorted(SCOPES)
    assert receiver.arrivals == []


def test_a_user_with_mfa_passes_the_second_factor_before_consent(
    browser: Browser, stack: Stack, receiver: Receiver, mfa_user: User
) -> None:
    assert mfa_user.totp is not None
    request = authorization(stack)
    browser.open(request.url)
    sign_in(browser, mfa_user.email)

    browser.wait_for("form#mfa")
    assert not browser.has("form#consent")  # the password alone is not enough
    second_factor(browser, wrong_totp_code(mfa_user.totp))
    shows_error(browser)
    assert browser.has("form#mfa")
    assert not browser.has("form#consent")
    assert_still_on_our_pages(browser, stack, receiver)

    second_factor(browser, unused_totp_code(mfa_user.totp))
    assert sorted(listed_scopes(browser)) == sorted(SCOPES)
    browser.click_and_wait_for_next_page("#approve")
    arrival = receiver.wait_for_arrival()
    assert arrival.one("state") == request.state
    tokens = exchange(stack, arrival.one("code"), request.verifier)
    assert tokens.status_code == 200, tokens.text
    claims = jwt.get_unverified_claims(tokens.json()["access_token"])
    assert claims["sub"] == mfa_user.id
    assert "otp" in claims["amr"]  # the grant records that the second factor was used


def test_denied_consent_sends_access_denied_and_no_code(
    browser: Browser, stack: Stack, receiver: Receiver, user: User
) -> None:
    request = authorization(stack)
    browser.open(request.url)
    sign_in(browser, user.email)
    listed_scopes(browser)

    browser.click_and_wait_for_next_page("#deny")
    arrival = receiver.wait_for_arrival()
    assert browser.url.startswith(stack.redirect_uri + "?"), browser.url
    assert arrival.one("error") == "access_denied"
    assert arrival.one("state") == request.state
    assert "code" not in arrival.query


def test_a_forged_csrf_token_on_the_sign_in_form_is_refused(
    browser: Browser, stack: Stack, receiver: Receiver, user: User
) -> None:
    browser.open(authorization(stack).url)
    fill_in(browser, "form#sign-in input[name='email']", user.email)
    fill_in(browser, "form#sign-in input[name='password']", PASSWORD)
    set_csrf_token(browser, "sign-in", secrets.token_urlsafe(32))
    browser.click_and_wait_for_next_page("#sign-in-submit")

    assert browser.status() == 403
    shows_error(browser)
    assert not browser.has("form#consent")  # the right password did not sign anyone in
    assert_still_on_our_pages(browser, stack, receiver)


@pytest.mark.parametrize("token", ["forged", "missing", "other-browser"])
def test_consent_without_this_browsers_csrf_token_is_refused(
    browser: Browser,
    stack: Stack,
    receiver: Receiver,
    user: User,
    tmp_path: Path,
    token: str,
) -> None:
    browser.open(authorization(stack).url)
    sign_in(browser, user.email)
    listed_scopes(browser)
    if token == "forged":
        set_csrf_token(browser, "consent", secrets.token_urlsafe(32))
    elif token == "missing":
        set_csrf_token(browser, "consent", None)
    else:
        # A token the server really issued, to the same user on the same client, but in
        # another browser: a cross-site request could carry one like it.
        set_csrf_token(browser, "consent", consent_token_of_another_browser(stack, user, tmp_path))
    browser.click_and_wait_for_next_page("#approve")

    assert browser.status() == 403
    shows_error(browser)
    assert_still_on_our_pages(browser, stack, receiver)


def consent_token_of_another_browser(stack: Stack, user: User, tmp_path: Path) -> str:
    other = start_browser(tmp_path / "other-browser")
    try:
        other.open(authorization(stack).url)
        sign_in(other, user.email)
        listed_scopes(other)
        field = other.wait_for("form#consent input[name='csrf_token']")
        return str(field.get_attribute("value"))
    finally:
        other.quit()


def test_an_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(
    browser: Browser, stack: Stack, receiver: Receiver
) -> None:
    browser.open(authorization(stack, redirect_uri=stack.redirect_uri + "/elsewhere").url)
    shows_error(browser)
    assert browser.status() == 400
    assert not browser.has("form#sign-in")
    assert_still_on_our_pages(browser, stack, receiver)


def test_a_request_without_pkce_goes_back_to_the_client_with_an_error(
    browser: Browser, stack: Stack, receiver: Receiver
) -> None:
    request = authorization(stack, pkce=False)
    browser.open(request.url)
    arrival = receiver.wait_for_arrival()
    assert browser.url.startswith(stack.redirect_uri + "?"), browser.url
    assert arrival.one("error") == "invalid_request"
    assert arrival.one("state") == request.state
    assert "code" not in arrival.query


def page_answer(stack: Stack, page: str) -> requests.Response:
    """One page fetched outside the browser: sign-in, a refused POST, the error page."""
    if page == "error":
        return requests.get(
            authorization(stack, redirect_uri=stack.redirect_uri + "/elsewhere").url, timeout=30
        )
    url = authorization(stack).url
    if page == "refused":  # no browser cookie, a made-up token: the 403 page
        form = {"csrf_token": "forged", "email": "a@example.com", "password": PASSWORD}
        return requests.post(url, data=form, timeout=30)
    return requests.get(url, timeout=30)


@pytest.mark.parametrize(("page", "status"), [("sign-in", 200), ("refused", 403), ("error", 400)])
def test_pages_forbid_framing_and_caching(stack: Stack, page: str, status: int) -> None:
    """What a browser does not show: the headers every page carries (the pages contract)."""
    answer = page_answer(stack, page)
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    if page != "sign-in":
        assert 'id="error"' in answer.text, answer.text  # the page, not a relayed problem
    assert "no-store" in answer.headers["Cache-Control"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    policy = [d.strip() for d in answer.headers["Content-Security-Policy"].split(";")]
    assert "frame-ancestors 'none'" in policy, policy
