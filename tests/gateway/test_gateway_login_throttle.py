"""Login throttling attacked from the outside: the real gateway in front of the real auth
service (both under gunicorn), clients on different loopback source addresses.

The auth service trusts the gateway (TRUSTED_PROXIES=127.0.0.1/32), so it throttles by the
client address the gateway saw. The gateway's own auth rate limit is set out of the way, so
every 429 here is the auth service's throttle (problem type login-throttled).
The owner connects from 127.0.0.1; attackers from 127.0.0.2 and up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from gateway_support import Gateway, launch_gateway
from process_support import running_auth_service
from requests_toolbelt.adapters.source import SourceAddressAdapter

from auth_service.db.models import LoginThrottle, PasswordResetToken, User, utcnow
from auth_service.security.opaque import token_hash
from auth_service.services.throttle import account_key, address_key, ceiling_key

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
NEW_PASSWORD = "an even longer passphrase"
OWNER = "127.0.0.1"
ATTACKER = "127.0.0.2"
MAX_PER_ADDRESS = 3
MAX_PER_ACCOUNT = 8
THROTTLED = "https://authgate.dev/problems/login-throttled"


@pytest.fixture(scope="module")
def auth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the auth service keeps its SQLite database and log."""
    return tmp_path_factory.mktemp("auth-throttle")


@pytest.fixture(scope="module")
def front(auth_root: Path) -> Iterator[Gateway]:
    """The gateway in front of the auth service, which believes the gateway's X-Forwarded-For."""
    with running_auth_service(
        auth_root,
        TRUSTED_PROXIES="127.0.0.1/32",
        LOGIN_MAX_FAILURES=str(MAX_PER_ADDRESS),
        LOGIN_LOCKOUT_SECONDS="900",
        LOGIN_MAX_FAILURES_PER_ACCOUNT=str(MAX_PER_ACCOUNT),
        LOGIN_ACCOUNT_WINDOW_SECONDS="3600",
        LOG_FORMAT="console",
    ) as auth_url:
        gateway = launch_gateway(
            {
                "AUTH_SERVICE_URL": auth_url,
                # NOTE: the gateway believes nobody: clients connect to it directly.
                "TRUSTED_PROXIES": "",
                "RATE_LIMIT_AUTH": "100000/minute",
                "RATE_LIMIT_DEFAULT": "100000/minute",
            }
        )
        try:
            yield gateway
        finally:
            gateway.stop()


@pytest.fixture(scope="module")
def database(auth_root: Path, front: Gateway) -> Iterator[sqlalchemy.Engine]:
    """The auth service's own database, to check what it stored."""
    engine = sqlalchemy.create_engine(f"sqlite:///{auth_root / 'auth.db'}")
    yield engine
    engine.dispose()


class Client:
    """A client of the gateway whose connections leave from one loopback address."""

    def __init__(self, gateway: Gateway, source: str) -> None:
        self.base = f"{gateway.url}/api/v1"
        self.http = requests.Session()
        self.http.mount("http://", SourceAddressAdapter(source))

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, f"{self.base}{path}", timeout=30, **kwargs)

    def login(self, email: str, password: str = PASSWORD, **kwargs: Any) -> requests.Response:
        return self.call(
            "POST", "/auth/login", json={"email": email, "password": password}, **kwargs
        )

    def fail(self, email: str, times: int) -> None:
        """Wrong passwords, each refused with a plain 401."""
        for _ in range(times):
            result = self.login(email, "wrong password")
            assert result.status_code == 401, result.text

    def change_password(self, token: str, current: str) -> requests.Response:
        return self.call(
            "PUT",
            "/users/me/password",
            json={"current_password": current, "new_password": NEW_PASSWORD},
            headers={"Authorization": f"Bearer {token}"},
        )


@pytest.fixture(scope="module")
def owner(front: Gateway) -> Client:
    """The account's owner, at 127.0.0.1."""
    return Client(front, OWNER)


@pytest.fixture(scope="module")
def attacker(front: Gateway) -> Client:
    """Someone who knows the owner's email, at 127.0.0.2."""
    return Client(front, ATTACKER)


def new_account(owner: Client) -> str:
    """A freshly registered email."""
    email = f"owner-{uuid.uuid4().hex[:12]}@example.com"
    created = owner.call("POST", "/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return email


def assert_throttled(result: requests.Response, at_most: int) -> int:
    """The auth service's 429: problem+json with a Retry-After in (0, at_most]."""
    assert_problem(result, 429)
    assert result.json()["type"] == THROTTLED
    retry_after = int(result.headers["Retry-After"])
    assert 0 < retry_after <= at_most
    return retry_after


def throttle_rows(database: sqlalchemy.Engine, email: str) -> dict[str, Any]:
    """The email's throttle rows by key."""
    with database.connect() as connection:
        found = connection.execute(
            sqlalchemy.select(LoginThrottle.__table__).where(
                LoginThrottle.account_hash == account_key(email)
            )
        )
        return {row.key_hash: row for row in found}


def lock_the_account(front: Gateway, email: str) -> None:
    """Spread failures over 127.0.0.2-5, each below its own limit, until the ceiling trips."""
    per_address = MAX_PER_ADDRESS - 1
    for index in range(MAX_PER_ACCOUNT // per_address):
        client = Client(front, f"127.0.0.{index + 2}")
        client.fail(email, per_address)
        client.http.close()


def test_attacker_is_locked_out_and_the_owner_logs_in(
    owner: Client, attacker: Client, database: sqlalchemy.Engine
) -> None:
    email = new_account(owner)
    attacker.fail(email, MAX_PER_ADDRESS)
    # Locked at 127.0.0.2 before any password is checked: the right one is refused too.
    assert_throttled(attacker.login(email), 900)
    # Forging the client address does not help: the gateway believes no client's header.
    assert_throttled(attacker.login(email, headers={"X-Forwarded-For": "198.51.100.9"}), 900)
    # The owner, at 127.0.0.1, is not affected.
    signed_in = owner.login(email)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["access_token"]
    rows = throttle_rows(database, email)
    locked = {key for key, row in rows.items() if row.locked_until is not None}
    assert locked == {address_key(email, ATTACKER)}
    assert rows[ceiling_key(email)].failures == MAX_PER_ADDRESS


def test_ceiling_trips_across_addresses_and_admin_unlock_lifts_it(
    front: Gateway, owner: Client, database: sqlalchemy.Engine
) -> None:
    email = new_account(owner)
    lock_the_account(front, email)
    # Distributed guessing above the ceiling throttles the owner too (the documented cost).
    assert_throttled(owner.login(email), 3600)
    assert throttle_rows(database, email)[ceiling_key(email)].locked_until is not None

    user_id = user_id_of(database, email)
    assert_unlock_is_admin_only(owner, user_id)
    admin = bearer(admin_token(owner, database))
    missing = owner.call("POST", f"/users/{uuid.uuid4()}/unlock", headers=admin)
    assert_problem(missing, 404)
    unlocked = owner.call("POST", f"/users/{user_id}/unlock", headers=admin)
    assert unlocked.status_code == 204, unlocked.text
    assert throttle_rows(database, email) == {}
    assert owner.login(email).status_code == 200


def test_completed_password_reset_lifts_every_lock(
    front: Gateway, owner: Client, attacker: Client, database: sqlalchemy.Engine
) -> None:
    email = new_account(owner)
    lock_the_account(front, email)
    assert_throttled(owner.login(email), 3600)
    assert_throttled(attacker.login(email), 3600)

    confirmed = owner.call(
        "POST",
        "/auth/password-reset/confirm",
        json={"token": reset_token(database, email), "new_password": NEW_PASSWORD},
    )
    assert confirmed.status_code == 204, confirmed.text
    assert throttle_rows(database, email) == {}
    assert owner.login(email, NEW_PASSWORD).status_code == 200


def test_wrong_current_password_counts_and_locks(
    owner: Client, attacker: Client, database: sqlalchemy.Engine
) -> None:
    email = new_account(owner)
    stolen = owner.login(email).json()["access_token"]
    # Someone with a stolen access token guesses the password from 127.0.0.2.
    for _ in range(MAX_PER_ADDRESS):
        wrong = attacker.change_password(stolen, "not my password")
        assert wrong.status_code == 400, wrong.text
        assert wrong.json()["type"] == "https://authgate.dev/problems/wrong-password"
    assert_throttled(attacker.change_password(stolen, PASSWORD), 900)
    assert_throttled(attacker.login(email), 900)
    rows = throttle_rows(database, email)
    assert rows[address_key(email, ATTACKER)].locked_until is not None
    assert rows[ceiling_key(email)].failures == MAX_PER_ADDRESS
    # The owner, from 127.0.0.1, changes the password.
    changed = owner.change_password(stolen, PASSWORD)
    assert changed.status_code == 204, changed.text


# --- set-up helpers ---------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for an access token."""
    return {"Authorization": f"Bearer {token}"}


def user_id_of(database: sqlalchemy.Engine, email: str) -> str:
    """The id of a registered user."""
    with database.connect() as connection:
        return str(connection.scalar(sqlalchemy.select(User.id).where(User.email == email)))


def admin_token(client: Client, database: sqlalchemy.Engine) -> str:
    """An access token of a fresh superuser (made one in the database, as create-admin would)."""
    email = new_account(client)
    with database.begin() as connection:
        connection.execute(
            sqlalchemy.update(User).where(User.email == email).values(is_superuser=True)
        )
    signed_in = client.login(email)
    assert signed_in.status_code == 200, signed_in.text
    return str(signed_in.json()["access_token"])


def assert_problem(result: requests.Response, status: int) -> None:
    """A problem+json answer with this status."""
    assert result.status_code == status, result.text
    assert result.headers["Content-Type"] == "application/problem+json"
    assert result.json()["status"] == status


def assert_unlock_is_admin_only(client: Client, user_id: str) -> None:
    """No token is a 401 (from the gateway), a user's token a 403 (from the auth service)."""
    assert_problem(client.call("POST", f"/users/{user_id}/unlock"), 401)
    other = new_account(client)
    token = client.login(other).json()["access_token"]
    assert_problem(client.call("POST", f"/users/{user_id}/unlock", headers=bearer(token)), 403)


def reset_token(database: sqlalchemy.Engine, email: str) -> str:
    """A valid reset token for the user, as if they had received the mail."""
    token = uuid.uuid4().hex
    with database.begin() as connection:
        user_id = connection.scalar(sqlalchemy.select(User.id).where(User.email == email))
        connection.execute(
            sqlalchemy.insert(PasswordResetToken).values(
                id=uuid.uuid4(),
                token_hash=token_hash(token),
                user_id=user_id,
                expires_at=utcnow() + timedelta(minutes=30),
            )
        )
    return token
