"""Drills 4 and 8: Redis goes away and comes back; SMTP is down when reset mail is due.

Drill 4: with Redis down the gateway follows its documented fail modes (auth routes and
bearer requests 503, the rest open); a session revoked meanwhile is refused once Redis is
back, although the revocation never reached Redis (the gateway also reads the auth
service's revocation feed). Drill 8: a sign-up and a reset while SMTP is down answer 201
and 202 as always, and both mails go out once SMTP returns (the outbox keeps them): the
verification link verifies the address, the reset link resets the password.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import sqlalchemy
from process_support import REPO, free_port
from reliability_support import (
    PASSWORD,
    PrivatePostgres,
    PrivateRedis,
    record,
    register_and_login,
    session,
    start_stack,
)

sys.path.insert(0, str(REPO / "tests" / "auth"))  # the aiosmtpd inbox of the auth tests
from smtp_inbox import (
    RESET_SUBJECT,
    RESET_URL,
    VERIFY_SUBJECT,
    VERIFY_URL,
    reset_token_from,
    smtp_server,
    verification_token_from,
)


def bearer(pair: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def poll_status(call: object, wanted: int, seconds: float) -> int:
    """Call until it answers `wanted` or time is up; the last status."""
    deadline = time.monotonic() + seconds
    status = 0
    while time.monotonic() < deadline:
        status = call()  # type: ignore[operator]
        if status == wanted:
            return status
        time.sleep(0.2)
    return status


def test_redis_goes_away_and_comes_back(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    stack = start_stack(tmp_path, private_postgres.url, private_redis.url)
    api = stack.api
    try:
        kept = register_and_login(api, "kept@example.com")
        ended = register_and_login(api, "ended@example.com")
        with session() as client:
            assert client.get(f"{api}/auth/me", headers=bearer(ended), timeout=10).ok
            private_redis.stop()
            login = client.post(
                f"{api}/auth/login",
                json={"email": "kept@example.com", "password": PASSWORD},
                timeout=10,
            )
            me = client.get(f"{api}/auth/me", headers=bearer(kept), timeout=10)
            ready = client.get(f"{stack.gateway.url}/readyz", timeout=10)
            # Logout is neither an auth-limited route nor a bearer one: it passes (fail
            # open) and ends the session in the database; Redis never hears of it.
            logout = client.post(
                f"{api}/auth/logout", json={"refresh_token": ended["refresh_token"]}, timeout=10
            )
            down = (login.status_code, me.status_code, ready.status_code, logout.status_code)
            assert down == (503, 503, 503, 204), down
            assert login.json()["type"].endswith("/rate-limit-unavailable")
            assert me.json()["type"].endswith("/session-check-unavailable")
            private_redis.start()
            came_back = time.monotonic()
            kept_status = poll_status(
                lambda: client.get(f"{api}/auth/me", headers=bearer(kept), timeout=10).status_code,
                200,
                15,
            )
            ended_status = client.get(
                f"{api}/auth/me", headers=bearer(ended), timeout=10
            ).status_code
            recovered = time.monotonic() - came_back
            relogin = client.post(
                f"{api}/auth/login",
                json={"email": "kept@example.com", "password": PASSWORD},
                timeout=10,
            ).status_code
        assert (kept_status, ended_status, relogin) == (200, 401, 200)
        record(
            "4 Redis away and back",
            "redis-server stopped; a logout meanwhile; redis-server started again (empty)",
            f"down: login/me/readyz {down[:3]} (fail closed), logout {down[3]}; back: live "
            f"session 200 after {recovered:.1f}s, the session ended meanwhile 401, login 200",
            lost=0,
        )
    finally:
        stack.stop()


def test_reset_mail_survives_an_smtp_outage(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    smtp_port = free_port()  # nothing listens there yet: SMTP is down
    stack = start_stack(
        tmp_path,
        private_postgres.url,
        private_redis.url,
        auth_env={
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMTP_FROM": "noreply@authgate.test",
            "PASSWORD_RESET_URL": RESET_URL,
            "EMAIL_VERIFICATION_URL": VERIFY_URL,
            "MAIL_RETRY_BASE_SECONDS": "1",
            "MAIL_RETRY_MAX_SECONDS": "2",
            "MAIL_POLL_SECONDS": "1",
        },
    )
    db = sqlalchemy.create_engine(private_postgres.url)
    api = stack.api
    try:
        register_and_login(api, "mail@example.com")
        with session() as client:
            known = client.post(
                f"{api}/auth/password-reset", json={"email": "mail@example.com"}, timeout=10
            )
            unknown = client.post(
                f"{api}/auth/password-reset", json={"email": "nobody@example.com"}, timeout=10
            )
        assert (known.status_code, unknown.status_code) == (202, 202)
        # The sender tries, fails and keeps the mail for later.
        deadline = time.monotonic() + 20
        attempts = 0
        while time.monotonic() < deadline and attempts < 2:
            with db.connect() as connection:
                attempts = connection.execute(
                    sqlalchemy.text("SELECT coalesce(max(attempts), 0) FROM mail_outbox")
                ).scalar_one()
            time.sleep(0.5)
        assert attempts >= 2, "the sender never retried while SMTP was down"
        with smtp_server(smtp_port) as inbox:
            (recipients, message), *rest = inbox.wait_for(1, timeout=30, subject=RESET_SUBJECT)
            (verify_to, verify_mail), *more = inbox.wait_for(1, timeout=30, subject=VERIFY_SUBJECT)
            time.sleep(3)  # a second delivery of either mail would arrive by now
            resets, verifications = (inbox.with_subject(s) for s in (RESET_SUBJECT, VERIFY_SUBJECT))
            assert not rest and len(resets) == 1, "the reset mail went out more than once"
            assert not more and len(verifications) == 1, "the sign-up mail went out twice"
        assert recipients == verify_to == ["mail@example.com"]
        token = reset_token_from(message)
        with session() as client:
            verified = client.post(
                f"{api}/auth/verify-email",
                json={"token": verification_token_from(verify_mail)},
                timeout=10,
            )
        assert verified.status_code == 204, verified.text
        with db.connect() as connection:
            assert connection.execute(
                sqlalchemy.text("SELECT email_verified FROM users WHERE email = :e"),
                {"e": "mail@example.com"},
            ).scalar_one()
        with session() as client:
            confirmed = client.post(
                f"{api}/auth/password-reset/confirm",
                json={"token": token, "new_password": "a brand new password"},
                timeout=10,
            )
        assert confirmed.status_code == 204, confirmed.text
        record(
            "8 SMTP down",
            "a sign-up, and a password reset (known and unknown email), while nothing "
            "listens on SMTP_PORT; aiosmtpd started later",
            f"201 and both 202; {attempts}+ failed attempts kept in the outbox; each mail "
            "delivered once when SMTP listened: the verification link verified the address, "
            "the reset link reset the password",
            lost=0,
        )
    finally:
        db.dispose()
        stack.stop()
