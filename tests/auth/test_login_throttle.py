"""Login throttles an attacker cannot turn against the owner: per (email, address), a
per-account ceiling, what lifts them (reset, admin unlock), and wrong current passwords.

In-process, on PostgreSQL and SQLite; `remote_addr` plays the client's address. The same
attacks through the real gateway and gunicorn: tests/gateway/test_gateway_login_throttle.py.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, bearer
from authcheck import ago, assert_problem, execute, rows, sha256_hex, user_row

from auth_service.db.models import LoginThrottle, PasswordResetToken, utcnow
from auth_service.db.session import make_engine, make_sessionmaker
from auth_service.errors import LoginThrottled
from auth_service.services.throttle import (
    Limit,
    LoginThrottler,
    account_key,
    address_key,
    ceiling_key,
    clear_account,
    client_network,
)
from auth_service.settings import Settings, SettingsError

ATTACKER = "203.0.113.7"
OWNER = "198.51.100.1"
CHANGE = "/api/v1/users/me/password"
NEW_PASSWORD = "an even longer passphrase"


def unlock_path(user_id: str) -> str:
    """The admin unlock operation of a user."""
    return f"/api/v1/users/{user_id}/unlock"


def account_rows(database_url: str, email: str) -> list[Any]:
    """Every throttle row of an email, by its account hash."""
    return rows(
        database_url,
        sqlalchemy.select(LoginThrottle.__table__).where(
            LoginThrottle.account_hash == account_key(email)
        ),
    )


def fail_logins(api: Api, email: str, address: str, count: int) -> None:
    """`count` wrong passwords for `email` from `address`, each a 401."""
    for _ in range(count):
        result = api.login(email, "wrong password", remote_addr=address)
        assert_problem(result, 401, "invalid-credentials")


def assert_throttled(result: Any, at_most: int) -> int:
    """A 429 login-throttled with a Retry-After in (0, at_most]; the Retry-After."""
    assert_problem(result, 429, "login-throttled")
    retry_after = int(result.headers["retry-after"])
    assert 0 < retry_after <= at_most
    return retry_after


# --- per (email, address) ---------------------------------------------------------------


@pytest.mark.parametrize("known", [True, False], ids=["known-email", "unknown-email"])
def test_attacker_locks_only_their_own_address(make_client, database_url: str, known: bool) -> None:
    api = Api(make_client(login_max_failures=3))
    if known:
        api.register("ada@example.com")
    fail_logins(api, "ada@example.com", ATTACKER, 3)
    # The attacker's address is locked, even with the right password, before any bcrypt.
    assert_throttled(api.login("ada@example.com", remote_addr=ATTACKER), 900)
    # The owner, elsewhere, is not: a login (or, for an unknown email, a plain 401).
    owner = api.login("ada@example.com", remote_addr=OWNER)
    if known:
        assert owner.status_code == 200, owner.text
    else:
        assert_problem(owner, 401, "invalid-credentials")
    locked = [row for row in account_rows(database_url, "ada@example.com") if row.locked_until]
    assert [row.key_hash for row in locked] == [address_key("ada@example.com", ATTACKER)]


def test_lock_is_per_email_too(make_client) -> None:
    api = Api(make_client(login_max_failures=2))
    api.register("ada@example.com")
    api.register("grace@example.com")
    fail_logins(api, "ada@example.com", ATTACKER, 2)
    assert_throttled(api.login("ada@example.com", remote_addr=ATTACKER), 900)
    assert api.login("grace@example.com", remote_addr=ATTACKER).status_code == 200


def test_one_ipv6_host_is_one_client(make_client) -> None:
    """Addresses of one /64 share a counter: rotating through them buys no fresh guesses."""
    api = Api(make_client(login_max_failures=2))
    api.register("ada@example.com")
    fail_logins(api, "ada@example.com", "2001:db8:1:2::1", 1)
    fail_logins(api, "ada@example.com", "2001:db8:1:2:ffff::9", 1)
    assert_throttled(api.login("ada@example.com", remote_addr="2001:db8:1:2::77"), 900)
    # Another /64 is another client.
    assert api.login("ada@example.com", remote_addr="2001:db8:1:3::1").status_code == 200


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::", "2001:db8:1:2::/64"),
        (None, ""),
        ("unix-socket", "unix-socket"),
    ],
)
def test_client_network(address: str | None, network: str) -> None:
    assert client_network(address) == network


# --- the per-account ceiling ------------------------------------------------------------


def test_ceiling_trips_across_addresses_and_then_locks_the_owner_too(
    make_client, database_url: str
) -> None:
    api = Api(
        make_client(
            login_max_failures=3,
            login_max_failures_per_account=6,
            login_account_window_seconds=3600,
        )
    )
    api.register("ada@example.com")
    # Six addresses, one failure each: no address reaches its own limit of three.
    for index in range(6):
        fail_logins(api, "ada@example.com", f"203.0.113.{index + 10}", 1)
    # The cost of the ceiling: the owner's correct password is refused too, for up to the
    # account window (longer than the 900 s per-address lockout, so it is the ceiling).
    retry_after = assert_throttled(api.login("ada@example.com", remote_addr=OWNER), 3600)
    assert retry_after > 900
    ceiling = [
        row
        for row in account_rows(database_url, "ada@example.com")
        if row.key_hash == ceiling_key("ada@example.com")
    ]
    assert len(ceiling) == 1
    assert ceiling[0].failures == 6
    assert ceiling[0].locked_until is not None


def test_ceiling_counts_unknown_emails_alike(make_client, database_url: str) -> None:
    api = Api(make_client(login_max_failures=3, login_max_failures_per_account=4))
    for index in range(4):
        fail_logins(api, "nobody@example.com", f"203.0.113.{index + 10}", 1)
    assert_throttled(api.login("nobody@example.com", remote_addr=OWNER), 3600)
    stored = " ".join(
        str(v) for row in account_rows(database_url, "nobody@example.com") for v in row
    )
    assert "nobody" not in stored


# --- what lifts the locks ---------------------------------------------------------------


def reset_token_for(database_url: str, email: str) -> str:
    """A valid reset token for the user, as if they had received the mail."""
    token = uuid.uuid4().hex
    execute(
        database_url,
        sqlalchemy.insert(PasswordResetToken).values(
            id=uuid.uuid4(),
            token_hash=sha256_hex(token),
            user_id=user_row(database_url, email).id,
            expires_at=utcnow() + timedelta(minutes=30),
        ),
    )
    return token


def lock_everywhere(api: Api, email: str) -> None:
    """Trip one address's lock and the account ceiling (limits 2 and 4)."""
    fail_logins(api, email, ATTACKER, 2)
    fail_logins(api, email, "203.0.113.8", 1)
    fail_logins(api, email, "203.0.113.9", 1)
    assert_throttled(api.login(email, remote_addr=OWNER), 3600)


def test_password_reset_clears_every_counter_of_the_account(make_client, database_url: str) -> None:
    api = Api(make_client(login_max_failures=2, login_max_failures_per_account=4))
    api.register("ada@example.com")
    fail_logins(api, "grace@example.com", ATTACKER, 1)
    lock_everywhere(api, "ada@example.com")
    assert len(account_rows(database_url, "ada@example.com")) == 4

    confirmed = api.client.simulate_post(
        "/api/v1/auth/password-reset/confirm",
        json={
            "token": reset_token_for(database_url, "ada@example.com"),
            "new_password": NEW_PASSWORD,
        },
    )
    assert confirmed.status_code == 204, confirmed.text
    assert account_rows(database_url, "ada@example.com") == []
    # Somebody else's counters are not the reset's business.
    assert len(account_rows(database_url, "grace@example.com")) == 2
    # Every address, the attacker's included, starts from zero.
    assert api.login("ada@example.com", NEW_PASSWORD, remote_addr=OWNER).status_code == 200
    assert api.login("ada@example.com", NEW_PASSWORD, remote_addr=ATTACKER).status_code == 200


def test_admin_unlock_clears_every_counter_of_the_account(make_client, database_url: str) -> None:
    api = Api(make_client(login_max_failures=2, login_max_failures_per_account=4))
    admin = api.admin(database_url)
    ada = api.register("ada@example.com").json
    fail_logins(api, "grace@example.com", ATTACKER, 1)
    lock_everywhere(api, "ada@example.com")

    result = api.client.simulate_post(unlock_path(ada["id"]), headers=bearer(admin["access_token"]))
    assert result.status_code == 204, result.text
    assert result.text == ""
    assert account_rows(database_url, "ada@example.com") == []
    assert len(account_rows(database_url, "grace@example.com")) == 2
    assert api.login("ada@example.com", remote_addr=OWNER).status_code == 200
    # Unlocking an account without counters is a no-op 204 too.
    again = api.client.simulate_post(unlock_path(ada["id"]), headers=bearer(admin["access_token"]))
    assert again.status_code == 204, again.text


def test_unlock_is_admin_only(make_client, database_url: str) -> None:
    api = Api(make_client(login_max_failures=2))
    ada = api.user("ada@example.com")
    fail_logins(api, "ada@example.com", ATTACKER, 2)
    # Not even for oneself: an unlock by the locked-out user would defeat the lock.
    refused = api.client.simulate_post(unlock_path(ada["id"]), headers=bearer(ada["access_token"]))
    assert_problem(refused, 403, "forbidden")
    assert_problem(api.client.simulate_post(unlock_path(ada["id"])), 401)
    assert len(account_rows(database_url, "ada@example.com")) == 2


def test_unlock_unknown_or_malformed_user(make_client, database_url: str) -> None:
    api = Api(make_client())
    admin = api.admin(database_url)
    headers = bearer(admin["access_token"])
    missing = api.client.simulate_post(unlock_path(str(uuid.uuid4())), headers=headers)
    assert_problem(missing, 404, "user-not-found")
    assert_problem(api.client.simulate_post(unlock_path("me"), headers=headers), 422)


# --- wrong current password on PUT /users/me/password ----------------------------------


def change(api: Api, token: str, current: str, address: str) -> Any:
    """PUT /users/me/password from `address`."""
    return api.client.simulate_put(
        CHANGE,
        json={"current_password": current, "new_password": NEW_PASSWORD},
        headers=bearer(token),
        remote_addr=address,
    )


def test_wrong_current_password_counts_and_locks(make_client, database_url: str) -> None:
    api = Api(make_client(login_max_failures=3))
    ada = api.user("ada@example.com")
    before = user_row(database_url, "ada@example.com").hashed_password
    for _ in range(3):
        wrong = change(api, ada["access_token"], "not my password", ATTACKER)
        assert_problem(wrong, 400, "wrong-password", ["current_password"])
    # Locked from this address: even the right current password is refused, unchanged.
    assert_throttled(change(api, ada["access_token"], PASSWORD, ATTACKER), 900)
    assert user_row(database_url, "ada@example.com").hashed_password == before
    # The same counter as logins: a login from that address is refused too.
    assert_throttled(api.login("ada@example.com", remote_addr=ATTACKER), 900)
    ceiling = [
        row.failures
        for row in account_rows(database_url, "ada@example.com")
        if row.key_hash == ceiling_key("ada@example.com")
    ]
    assert ceiling == [3]
    # From another address the owner changes the password.
    assert change(api, ada["access_token"], PASSWORD, OWNER).status_code == 204


# --- the throttler itself ---------------------------------------------------------------


@pytest.fixture
def throttler(database_url: str) -> Any:
    """A throttler on the test database: 3 per address in 900 s, 5 per account in 3600 s."""
    engine = make_engine(database_url)
    yield LoginThrottler(
        make_sessionmaker(engine),
        per_address=Limit(3, 900),
        per_account=Limit(5, 3600),
    )
    engine.dispose()


def test_a_new_window_starts_when_the_old_one_has_passed(
    throttler: LoginThrottler, database_url: str
) -> None:
    for _ in range(3):
        throttler.record_failure("ada@example.com", ATTACKER)
    with pytest.raises(LoginThrottled):
        throttler.check("ada@example.com", ATTACKER)
    # Time passes: the window and the lock both end (moved in the database, not slept).
    execute(
        database_url,
        sqlalchemy.update(LoginThrottle).values(window_started_at=ago(901), locked_until=ago(1)),
    )
    throttler.check("ada@example.com", ATTACKER)
    throttler.record_failure("ada@example.com", ATTACKER)
    counts = {row.key_hash: row for row in account_rows(database_url, "ada@example.com")}
    pair = counts[address_key("ada@example.com", ATTACKER)]
    assert (pair.failures, pair.locked_until) == (1, None)
    # The ceiling's window (3600 s) had not passed at 901 s: it went on counting.
    assert counts[ceiling_key("ada@example.com")].failures == 4


def test_concurrent_failures_are_all_counted(throttler: LoginThrottler, database_url: str) -> None:
    addresses = ["203.0.113.1", "203.0.113.2"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda i: throttler.record_failure("ada@example.com", addresses[i % 2]), range(16)
            )
        )
    counts = {row.key_hash: row.failures for row in account_rows(database_url, "ada@example.com")}
    assert counts == {
        address_key("ada@example.com", addresses[0]): 8,
        address_key("ada@example.com", addresses[1]): 8,
        ceiling_key("ada@example.com"): 16,
    }


def test_clearing_while_failures_stream_in_never_deadlocks(
    throttler: LoginThrottler, database_url: str
) -> None:
    """A reset or unlock racing failures from many addresses: every call completes."""
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)

    def clear() -> None:
        with sessions.begin() as db:
            clear_account(db, "ada@example.com")

    def work(i: int) -> None:
        if i % 5 == 4:
            clear()
        else:
            throttler.record_failure("ada@example.com", f"203.0.113.{i % 7}")

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(work, range(40)))  # re-raises any deadlock error
        clear()
    finally:
        engine.dispose()
    assert account_rows(database_url, "ada@example.com") == []


# --- settings ---------------------------------------------------------------------------


def test_settings_defaults_and_bounds() -> None:
    defaults = Settings.from_env({})
    assert defaults.login_max_failures == 5
    assert defaults.login_lockout_seconds == 900
    assert defaults.login_max_failures_per_account == 100
    assert defaults.login_account_window_seconds == 3600
    custom = Settings.from_env(
        {"LOGIN_MAX_FAILURES_PER_ACCOUNT": "250", "LOGIN_ACCOUNT_WINDOW_SECONDS": "7200"}
    )
    assert (custom.login_max_failures_per_account, custom.login_account_window_seconds) == (
        250,
        7200,
    )
    with pytest.raises(SettingsError, match="LOGIN_MAX_FAILURES_PER_ACCOUNT"):
        Settings.from_env({"LOGIN_MAX_FAILURES_PER_ACCOUNT": "0"})
    with pytest.raises(SettingsError, match="LOGIN_ACCOUNT_WINDOW_SECONDS"):
        Settings.from_env({"LOGIN_ACCOUNT_WINDOW_SECONDS": "0"})
