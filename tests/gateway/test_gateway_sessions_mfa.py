"""Sessions and the second factor from the outside: the real gateway in front of the real
auth service (both under gunicorn, sharing Redis for revoked sessions), real TOTP codes.

The auth service trusts the gateway (TRUSTED_PROXIES=127.0.0.1/32), so a session records
the address the gateway saw; clients connect from different loopback addresses to tell
that apart from the gateway's own. Two auth workers: the MFA encryption key generated
under var/ must be the same in both (enrolment and confirmation may land on either).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
import requests
import sqlalchemy
from gateway_support import Gateway, LoopbackClient, gateway_before_auth
from jose import jwt

from auth_service.db.models import User

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
PROBLEMS = "https://authgate.dev/problems/"


@pytest.fixture(scope="module")
def auth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the auth service keeps its SQLite database, keys and log."""
    return tmp_path_factory.mktemp("auth-sessions-mfa")


@pytest.fixture(scope="module")
def front(auth_root: Path, redis_url: str) -> Iterator[Gateway]:
    """The gateway (default routes) in front of the auth service; both on one Redis."""
    with gateway_before_auth(auth_root, redis_url, workers=2) as gateway:
        yield gateway


class Client(LoopbackClient):
    """A loopback client that logs in."""

    def login(self, email: str, password: str = PASSWORD) -> requests.Response:
        return self.call("POST", "/auth/login", json={"email": email, "password": password})


def new_account(client: Client) -> str:
    email = f"mfa-{uuid.uuid4().hex[:12]}@example.com"
    created = client.call("POST", "/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return email


def sid(access_token: str) -> str:
    return str(jwt.get_unverified_claims(access_token)["sid"])


def assert_refused_by_gateway(response: requests.Response) -> None:
    """The gateway itself refused the token as revoked (it never reached the auth service)."""
    assert response.status_code == 401, response.text
    assert "revoked" in response.headers["WWW-Authenticate"], response.headers


def test_sessions_show_the_real_client_and_end_at_the_gateway_at_once(front: Gateway) -> None:
    laptop = Client(front, "127.0.0.1", "laptop/1.0")
    phone = Client(front, "127.0.0.2", "phone/2.0")
    email = new_account(laptop)
    mine = laptop.login(email).json()
    theirs = phone.login(email).json()

    listed = laptop.call("GET", "/auth/sessions", mine["access_token"])
    assert listed.status_code == 200, listed.text
    seen = {item["id"]: item for item in listed.json()["items"]}
    assert seen[sid(theirs["access_token"])]["ip_address"] == "127.0.0.2"
    assert seen[sid(theirs["access_token"])]["user_agent"] == "phone/2.0"
    assert seen[sid(theirs["access_token"])]["current"] is False
    assert seen[sid(mine["access_token"])]["ip_address"] == "127.0.0.1"
    assert seen[sid(mine["access_token"])]["current"] is True
    assert listed.json()["items"][0]["id"] == sid(theirs["access_token"])  # newest first

    ended = laptop.call(
        "DELETE", f"/auth/sessions/{sid(theirs['access_token'])}", mine["access_token"]
    )
    assert ended.status_code == 204, ended.text
    assert_refused_by_gateway(phone.call("GET", "/auth/me", theirs["access_token"]))
    refreshed = phone.call("POST", "/auth/refresh", json={"refresh_token": theirs["refresh_token"]})
    assert refreshed.status_code == 401
    assert laptop.call("GET", "/auth/me", mine["access_token"]).status_code == 200

    everywhere = laptop.call("DELETE", "/auth/sessions", mine["access_token"])
    assert everywhere.status_code == 204, everywhere.text
    assert_refused_by_gateway(laptop.call("GET", "/auth/me", mine["access_token"]))


def test_totp_enrol_login_recovery_and_admin_reset(front: Gateway, auth_root: Path) -> None:
    client = Client(front, "127.0.0.3", "authenticator-test/1.0")
    email = new_account(client)
    first = client.login(email).json()
    token = first["access_token"]

    started = client.call("POST", "/auth/mfa/totp", token, json={"password": PASSWORD})
    assert started.status_code == 200, started.text
    assert started.headers["Cache-Control"] == "no-store"
    totp = pyotp.TOTP(started.json()["secret"])
    confirmed = client.call("POST", "/auth/mfa/totp/confirm", token, json={"code": totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    recovery_codes = confirmed.json()["recovery_codes"]
    assert len(recovery_codes) == 10

    # A wrong password: the ordinary 401, nothing about MFA.
    wrong = client.login(email, "wrong password")
    assert wrong.status_code == 401
    assert wrong.json()["type"] == PROBLEMS + "invalid-credentials"
    assert "mfa_token" not in wrong.json()

    challenged = client.login(email)
    assert challenged.status_code == 401, challenged.text
    assert challenged.headers["Content-Type"].startswith("application/problem+json")
    assert challenged.json()["type"] == PROBLEMS + "mfa-required"
    # The next step's code: the confirmation used this step's, and a code works once.
    code = totp.at(time.time() + 30)
    done = client.call(
        "POST", "/auth/login/mfa", json={"mfa_token": challenged.json()["mfa_token"], "code": code}
    )
    assert done.status_code == 200, done.text
    access = done.json()["access_token"]
    assert jwt.get_unverified_claims(access)["amr"] == ["pwd", "otp"]
    me = client.call("GET", "/auth/me", access)  # the gateway verifies a token with amr
    assert me.status_code == 200 and me.json()["mfa_enabled"] is True

    replay = client.call(
        "POST",
        "/auth/login/mfa",
        json={"mfa_token": client.login(email).json()["mfa_token"], "code": code},
    )
    assert replay.status_code == 401 and replay.json()["type"] == PROBLEMS + "invalid-mfa-code"

    by_recovery = client.call(
        "POST",
        "/auth/login/mfa",
        json={"mfa_token": client.login(email).json()["mfa_token"], "code": recovery_codes[0]},
    )
    assert by_recovery.status_code == 200, by_recovery.text

    # The device is lost: an admin resets the factor, which ends every session.
    admin = make_admin(client, auth_root)
    reset = client.call("DELETE", f"/users/{me.json()['id']}/mfa", admin)
    assert reset.status_code == 204, reset.text
    for ended in (token, access, by_recovery.json()["access_token"]):
        assert_refused_by_gateway(client.call("GET", "/auth/me", ended))
    again = client.login(email)
    assert again.status_code == 200, again.text
    assert jwt.get_unverified_claims(again.json()["access_token"])["amr"] == ["pwd"]


def make_admin(client: Client, auth_root: Path) -> str:
    """A superuser's access token (made one in the database, as create-admin would)."""
    email = new_account(client)
    engine = sqlalchemy.create_engine(f"sqlite:///{auth_root / 'auth.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.update(User).where(User.email == email).values(is_superuser=True)
            )
    finally:
        engine.dispose()
    return str(client.login(email).json()["access_token"])
