"""Password reset end to end through a real SMTP server (aiosmtpd) on a free port.

In-process tests first; then the real gunicorn service: an SMTP outage and a restart lose
no mail, and known and unknown emails get the same answer and the same request-path write.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, bearer, set_user_flags
from auth_server import fresh_connection, run_cli, running_auth_service
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
from smtp_inbox import RESET_SUBJECT, RESET_URL, Inbox, reset_token_from, smtp_server

from auth_service.db.models import MailOutbox, PasswordResetRequest, PasswordResetToken

RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
NEW_PASSWORD = "a brand new passphrase"


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
    # NOTE: the sign-up's verification mail goes to the same inbox: only resets count here.
    (recipients, message), *_ = mail.wait_for(1, subject=RESET_SUBJECT)
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
    assert len(mail.with_subject(RESET_SUBJECT)) == 1


def test_unknown_or_inactive_email_gets_202_and_no_mail(
    mailing_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, (mail, _) = mailing_api, inbox
    bob = api.register("bob@example.com").json
    set_user_flags(database_url, bob["id"], is_active=False)
    request_reset(api, "nobody@example.com")
    request_reset(api, "bob@example.com")
    # A known, active account afterwards proves the sender works: it resolves requests in
    # order, so once Ada's mail is out the two before it were resolved too.
    api.register("ada@example.com")
    request_reset(api, "ada@example.com")
    mail.wait_for(1, subject=RESET_SUBJECT)
    assert rows(database_url, sqlalchemy.select(PasswordResetRequest.id)) == []
    outbox = rows(
        database_url,
        sqlalchemy.select(MailOutbox.recipient).where(MailOutbox.subject == RESET_SUBJECT),
    )
    assert [row.recipient for row in outbox] == ["ada@example.com"]
    assert [tos for tos, _ in mail.with_subject(RESET_SUBJECT)] == [["ada@example.com"]]
    assert len(rows(database_url, sqlalchemy.select(PasswordResetToken.id))) == 1


def test_expired_reset_token_is_400(
    mailing_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, (mail, _) = mailing_api, inbox
    api.register("ada@example.com")
    before = user_row(database_url, "ada@example.com").hashed_password
    request_reset(api, "ada@example.com")
    token = reset_token_from(mail.wait_for(1, subject=RESET_SUBJECT)[0][1])
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
    first, second = (
        reset_token_from(message) for _, message in mail.wait_for(2, subject=RESET_SUBJECT)
    )
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
    (recipients, message), *_ = mail.wait_for(1, subject=RESET_SUBJECT)
    assert recipients == ["ada@xn--bcher-kva.example"]
    assert message["To"] == "ada@xn--bcher-kva.example"
    assert reset_token_from(message)


# --------------------------------------------------------------------------- gunicorn

T = TypeVar("T")
RETRY_BASE, RETRY_CAP = 1, 4


def until(probe: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s")


def mail_env(database_url: str, smtp_port: int) -> dict[str, str]:
    """Settings that send the service's mail to 127.0.0.1:`smtp_port`, retrying fast."""
    return {
        "DATABASE_URL": database_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_FROM": "noreply@authgate.test",
        "PASSWORD_RESET_URL": RESET_URL,
        "MAIL_RETRY_BASE_SECONDS": str(RETRY_BASE),
        "MAIL_RETRY_MAX_SECONDS": str(RETRY_CAP),
        "MAIL_POLL_SECONDS": "1",
    }


def mail_service(
    root: Path, database_url: str, smtp_port: int, **env: str
) -> contextlib.AbstractContextManager[str]:
    """The auth service under gunicorn (two workers) mailing through `smtp_port`."""
    return running_auth_service(root, **mail_env(database_url, smtp_port), **env)


def outbox_rows(database_url: str) -> list[Any]:
    """The reset mails in the outbox (the sign-up's verification mail is not one)."""
    return rows(
        database_url,
        sqlalchemy.select(MailOutbox.__table__)
        .where(MailOutbox.subject == RESET_SUBJECT)
        .order_by(MailOutbox.created_at),
    )


def backoff_floor(attempts: int) -> timedelta:
    """The least time from enqueueing to a row's next attempt after `attempts` failures."""
    return timedelta(seconds=sum(min(RETRY_BASE * 2**k, RETRY_CAP) for k in range(attempts)))


def post(base: str, path: str, body: dict[str, str]) -> Any:
    return fresh_connection("POST", f"{base}{path}", json=body)


def reset_over_http(base: str, address: str) -> Any:
    answer = post(base, RESET, {"email": address})
    assert answer.status_code == 202, answer.text
    return answer


@pytest.mark.slow
def test_mail_survives_an_smtp_outage_and_a_restart(database_url: str, tmp_path: Path) -> None:
    smtp_port = free_port()  # nothing listens there yet: SMTP is down
    with mail_service(tmp_path, database_url, smtp_port) as base:
        assert (
            post(
                base, "/api/v1/auth/register", {"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 201
        )
        reset_over_http(base, "ada@example.com")

        # Retried with growing waits while SMTP is down; nothing is lost, no secret logged.
        row = until(
            lambda: [r for r in outbox_rows(database_url) if r.attempts >= 2],
            "second failed attempt",
        )[0]
        assert (row.sent_at, row.failed_at, row.recipient) == (None, None, "ada@example.com")
        assert row.last_error == "ConnectionRefusedError"
        assert row.next_attempt_at - row.created_at >= backoff_floor(row.attempts)
        assert rows(database_url, sqlalchemy.select(PasswordResetRequest.id)) == []

        # SMTP comes back: the waiting mail goes out once, by the running service.
        with smtp_server(smtp_port) as mail:
            (recipients, message), *_ = mail.wait_for(1, timeout=20, subject=RESET_SUBJECT)
            assert recipients == ["ada@example.com"]
            first_token = reset_token_from(message)
            until(lambda: outbox_rows(database_url)[0].sent_at, "sent_at")
        assert len(mail.with_subject(RESET_SUBJECT)) == 1

        # SMTP down again, and a second mail waits in the outbox when the service stops.
        reset_over_http(base, "ada@example.com")
        until(
            lambda: (
                len(outbox_rows(database_url)) == 2 and outbox_rows(database_url)[1].attempts >= 1
            ),
            "first attempt of the second mail",
        )

    with smtp_server(smtp_port) as mail, mail_service(tmp_path, database_url, smtp_port) as base:
        (recipients, message), *_ = mail.wait_for(1, timeout=20, subject=RESET_SUBJECT)
        assert recipients == ["ada@example.com"]
        token = reset_token_from(message)
        assert token != first_token
        confirmed = post(base, CONFIRM, {"token": token, "new_password": NEW_PASSWORD})
        assert confirmed.status_code == 204, confirmed.text
        logged_in = post(
            base, "/api/v1/auth/login", {"email": "ada@example.com", "password": NEW_PASSWORD}
        )
        assert logged_in.status_code == 200, logged_in.text
        stale = post(base, CONFIRM, {"token": first_token, "new_password": "yet another one"})
        assert stale.status_code == 400
        until(lambda: all(r.sent_at for r in outbox_rows(database_url)), "both rows sent")
        # The sign-up's verification mail, retried beside them, is out too.
        until(
            lambda: (
                rows(
                    database_url,
                    sqlalchemy.select(MailOutbox.id).where(MailOutbox.sent_at.is_(None)),
                )
                == []
            ),
            "every mail sent",
        )

    # Each mail went out exactly once: nothing is left for another drain to send.
    with smtp_server(smtp_port) as late:
        drained = run_cli(
            "send-mail", AUTHGATE_VAR_DIR=str(tmp_path / "var"), **mail_env(database_url, smtp_port)
        )
    assert drained.returncode == 0, drained.stderr
    assert "sent 0," in drained.stdout, drained.stdout
    assert late.messages == [] and len(mail.with_subject(RESET_SUBJECT)) == 1
    for row in outbox_rows(database_url):
        assert row.next_attempt_at is None and row.failed_at is None
        assert row.body == ""  # the link is not kept once sent


VOLATILE_HEADERS = {"date", "x-request-id"}


@pytest.mark.slow
def test_known_and_unknown_emails_look_alike_and_write_alike(
    database_url: str, tmp_path: Path
) -> None:
    smtp_port = free_port()
    # No sender in the service: what the request path wrote stays visible until we drain.
    with mail_service(tmp_path, database_url, smtp_port, MAIL_SENDER_IN_PROCESS="false") as base:
        assert (
            post(
                base, "/api/v1/auth/register", {"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 201
        )
        known = reset_over_http(base, "Ada@Example.com")
        unknown = reset_over_http(base, "nobody@example.com")
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content

    def stable(answer: Any) -> dict[str, str]:
        return {
            k.lower(): v for k, v in answer.headers.items() if k.lower() not in VOLATILE_HEADERS
        }

    assert stable(known) == stable(unknown)

    # The request path wrote one queued request for each email and nothing else.
    queued = rows(
        database_url,
        sqlalchemy.select(PasswordResetRequest.email).order_by(PasswordResetRequest.created_at),
    )
    assert [row.email for row in queued] == ["ada@example.com", "nobody@example.com"]
    assert outbox_rows(database_url) == []
    assert rows(database_url, sqlalchemy.select(PasswordResetToken.id)) == []

    # A separate sender process resolves them: a token and a mail for Ada only.
    with smtp_server(smtp_port) as mail:
        drained = run_cli(
            "send-mail", AUTHGATE_VAR_DIR=str(tmp_path / "var"), **mail_env(database_url, smtp_port)
        )
    assert drained.returncode == 0, drained.stderr
    # Sent: Ada's reset and her sign-up's verification mail.
    assert "1 reset request(s) became mail; sent 2," in drained.stdout, drained.stdout
    resets = mail.with_subject(RESET_SUBJECT)
    assert [recipients for recipients, _ in resets] == [["ada@example.com"]]
    token = reset_token_from(resets[0][1])
    assert rows(database_url, sqlalchemy.select(PasswordResetRequest.id)) == []
    stored = rows(database_url, sqlalchemy.select(PasswordResetToken.token_hash))
    assert [row.token_hash for row in stored] == [sha256_hex(token)]
