"""Password reset end to end through a real SMTP server (aiosmtpd) on a free port."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from aiosmtpd.controller import Controller
from auth_api import PASSWORD, Api, bearer, set_user_flags
from authcheck import (
    ago,
    assert_problem,
    assert_unauthorized_token,
    execute,
    live_sessions,
    rows,
    sha256_hex,
    user_row,
)
from process_support import free_port

from auth_service.db.models import PasswordResetToken

RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
RESET_URL = "https://app.example.com/reset"
LINK = re.compile(r"https://app\.example\.com/reset\?token=([A-Za-z0-9_\-]+)")
NEW_PASSWORD = "a brand new passphrase"


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted"

    def wait_for(self, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} mails within {timeout} s, got {len(self.messages)}")


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def mailing_api(make_client, inbox: tuple[Inbox, int]) -> Api:
    _, port = inbox
    return Api(
        make_client(
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_from="noreply@authgate.test",
            password_reset_url=RESET_URL,
        )
    )


def reset_token_from(message: email.message.EmailMessage) -> str:
    body = message.get_content()
    found = LINK.findall(body)
    assert len(found) == 1, body
    return found[0]


def request_reset(api: Api, address: str, **headers: str) -> None:
    result = api.client.simulate_post(RESET, json={"email": address}, headers=headers)
    assert result.status_code == 202, result.text
    assert result.json == {
        "detail": "If an account exists for this email, a password reset link has been sent."
    }


def test_password_reset_end_to_end(
    mailing_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, (mail, _) = mailing_api, inbox
    ada = api.user("ada@example.com")
    second = api.login("ada@example.com").json
    before = user_row(database_url, "ada@example.com").hashed_password

    # The Host header must not steer the link (poisoned reset links).
    request_reset(
        api, " ADA@example.com", Host="evil.example", **{"X-Forwarded-Host": "evil.example"}
    )
    (recipients, message), *_ = mail.wait_for(1)
    assert recipients == ["ada@example.com"]
    assert message["To"] == "ada@example.com"
    assert message["From"] == "noreply@authgate.test"
    assert "evil.example" not in message.as_string()
    token = reset_token_from(message)

    stored = rows(database_url, sqlalchemy.select(PasswordResetToken.__table__))
    assert len(stored) == 1
    assert stored[0].token_hash == sha256_hex(token)
    assert token not in str(tuple(stored[0]))
    assert stored[0].used_at is None

    confirmed = api.client.simulate_post(
        CONFIRM, json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert confirmed.status_code == 204, confirmed.text
    assert user_row(database_url, "ada@example.com").hashed_password != before
    assert rows(database_url, sqlalchemy.select(PasswordResetToken.used_at))[0].used_at is not None
    # Every session that existed is over.
    assert live_sessions(database_url, ada["id"]) == []
    for pair in (ada, second):
        assert_unauthorized_token(
            api.client.simulate_get("/api/v1/auth/me", headers=bearer(pair["access_token"]))
        )
        refreshed = api.client.simulate_post(
            "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert_problem(refreshed, 401, "invalid-refresh-token")
    assert_problem(api.login("ada@example.com", PASSWORD), 401, "invalid-credentials")
    assert api.login("ada@example.com", NEW_PASSWORD).status_code == 200

    reused = api.client.simulate_post(
        CONFIRM, json={"token": token, "new_password": "yet another one"}
    )
    assert_problem(reused, 400, "invalid-reset-token")
    assert api.login("ada@example.com", NEW_PASSWORD).status_code == 200
    assert len(mail.messages) == 1


def test_unknown_or_inactive_email_gets_202_and_no_mail(
    mailing_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, (mail, _) = mailing_api, inbox
    bob = api.register("bob@example.com").json
    set_user_flags(database_url, bob["id"], is_active=False)
    request_reset(api, "nobody@example.com")
    request_reset(api, "bob@example.com")
    # A known, active account afterwards proves the mailer works and ran in order.
    api.register("ada@example.com")
    request_reset(api, "ada@example.com")
    messages = mail.wait_for(1)
    time.sleep(0.5)
    assert [recipients for recipients, _ in mail.messages] == [["ada@example.com"]]
    assert len(messages) == 1
    assert len(rows(database_url, sqlalchemy.select(PasswordResetToken.id))) == 1


def test_expired_reset_token_is_400(
    mailing_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, (mail, _) = mailing_api, inbox
    api.register("ada@example.com")
    before = user_row(database_url, "ada@example.com").hashed_password
    request_reset(api, "ada@example.com")
    token = reset_token_from(mail.wait_for(1)[0][1])
    execute(
        database_url,
        sqlalchemy.update(PasswordResetToken)
        .where(PasswordResetToken.token_hash == sha256_hex(token))
        .values(expires_at=ago(1)),
    )
    result = api.client.simulate_post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    assert_problem(result, 400, "invalid-reset-token")
    assert user_row(database_url, "ada@example.com").hashed_password == before
    assert api.login("ada@example.com", PASSWORD).status_code == 200


def test_unknown_reset_token_is_400(mailing_api: Api) -> None:
    result = mailing_api.client.simulate_post(
        CONFIRM, json={"token": "never-issued", "new_password": NEW_PASSWORD}
    )
    assert_problem(result, 400, "invalid-reset-token")


def test_using_one_reset_link_spends_the_others(
    mailing_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, (mail, _) = mailing_api, inbox
    api.register("ada@example.com")
    request_reset(api, "ada@example.com")
    request_reset(api, "ada@example.com")
    first, second = (reset_token_from(message) for _, message in mail.wait_for(2))
    assert first != second
    ok = api.client.simulate_post(CONFIRM, json={"token": second, "new_password": NEW_PASSWORD})
    assert ok.status_code == 204
    stale = api.client.simulate_post(CONFIRM, json={"token": first, "new_password": "other one!"})
    assert_problem(stale, 400, "invalid-reset-token")
    assert api.login("ada@example.com", NEW_PASSWORD).status_code == 200


def test_reset_mail_reaches_an_internationalised_domain_without_smtputf8(
    mailing_api: Api, inbox: tuple[Inbox, int]
) -> None:
    # Stored in IDNA normal form (Unicode), requested in punycode, delivered in ASCII.
    api, (mail, _) = mailing_api, inbox
    assert api.register("Ada@BÜCHER.example").json["email"] == "ada@bücher.example"
    request_reset(api, "ada@xn--bcher-kva.example")
    (recipients, message), *_ = mail.wait_for(1)
    assert recipients == ["ada@xn--bcher-kva.example"]
    assert message["To"] == "ada@xn--bcher-kva.example"
    assert LINK.search(message.get_content())
