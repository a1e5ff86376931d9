"""The mail outbox: claimed once by competing senders, retried, given up on, measured.

Senders are the real ones (threads of MailSender, `python -m auth_service.cli send-mail`,
gunicorn workers) against a real SMTP server (aiosmtpd), on PostgreSQL and SQLite.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from auth_api import Api
from auth_server import CLI, cli_env, fresh_connection, run_cli, running_auth_service
from authcheck import ago, execute, rows
from process_support import REPO, free_port
from prometheus_client.parser import text_string_to_metric_families
from smtp_inbox import Inbox

from auth_service.db.models import MailOutbox
from auth_service.db.session import make_engine, make_sessionmaker
from auth_service.metrics import Metrics
from auth_service.services import outbox
from auth_service.services.mailer import SmtpMailer
from auth_service.services.outbox import MailSender, RetryPolicy

SENDER = "noreply@authgate.test"


@pytest.fixture
def sessions(database_url: str) -> Iterator[Any]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def enqueue_mails(sessions: Any, count: int) -> list[str]:
    """`count` mails to distinct recipients, committed in one transaction."""
    recipients = [f"user{n:03d}@example.com" for n in range(count)]
    with sessions.begin() as db:
        for to in recipients:
            outbox.enqueue(db, to=to, subject="Hello", body=f"for {to}")
    return recipients


def outbox_rows(database_url: str) -> list[Any]:
    return rows(database_url, sqlalchemy.select(MailOutbox.__table__))


def smtp_mailer(port: int) -> SmtpMailer:
    return SmtpMailer("127.0.0.1", port, SENDER)


def test_retry_waits_double_up_to_the_cap() -> None:
    policy = RetryPolicy(base_seconds=10, max_seconds=60, max_attempts=100)
    assert [policy.delay(n).total_seconds() for n in range(1, 6)] == [10, 20, 40, 60, 60]
    assert policy.delay(100) == timedelta(seconds=60)


def test_concurrent_senders_deliver_each_mail_once(
    sessions: Any, inbox: tuple[Inbox, int], database_url: str
) -> None:
    mail, port = inbox
    recipients = enqueue_mails(sessions, 60)
    senders = [MailSender(sessions, smtp_mailer(port), RetryPolicy()) for _ in range(4)]
    start = threading.Barrier(len(senders))
    reports = []

    def drain(sender: MailSender) -> None:
        start.wait()
        reports.append(sender.drain())

    threads = [threading.Thread(target=drain, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(report.sent for report in reports) == 60
    assert sorted(to for tos, _ in mail.messages for to in tos) == recipients
    assert len(mail.messages) == 60
    for row in outbox_rows(database_url):
        assert (row.attempts, row.next_attempt_at, row.last_error) == (1, None, None)
        assert row.sent_at is not None and row.body == ""


@pytest.mark.slow
def test_two_sender_processes_deliver_each_mail_once(
    sessions: Any, inbox: tuple[Inbox, int], database_url: str, tmp_path: Path
) -> None:
    mail, port = inbox
    recipients = enqueue_mails(sessions, 150)
    env = {
        "DATABASE_URL": database_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "AUTHGATE_VAR_DIR": str(tmp_path / "var"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda _: run_cli("send-mail", **env), range(2)))
    assert [run.returncode for run in runs] == [0, 0], [run.stderr[-2000:] for run in runs]
    sent = [line for run in runs for line in run.stdout.splitlines() if line.endswith(": sent")]
    assert len(sent) == 150
    assert sorted(to for tos, _ in mail.messages for to in tos) == recipients
    assert all(row.attempts == 1 for row in outbox_rows(database_url))


def test_mail_is_given_up_after_max_attempts(
    sessions: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    down = free_port()
    sender = MailSender(
        sessions, smtp_mailer(down), RetryPolicy(base_seconds=30, max_attempts=2), events=metrics
    )
    metrics.watch_backlog(sender.backlog)
    (to,) = enqueue_mails(sessions, 1)
    assert "authgate_mail_outbox_backlog 1.0" in metrics.exposition().decode()

    first = sender.drain()
    assert (first.sent, first.retry, first.failed) == (0, 1, 0)
    (row,) = outbox_rows(database_url)
    assert row.attempts == 1 and row.last_error == "ConnectionRefusedError"
    assert row.next_attempt_at - ago(0) > timedelta(seconds=25)
    assert sender.drain().retry == 0  # not due yet: nobody tries again early

    execute(database_url, sqlalchemy.update(MailOutbox).values(next_attempt_at=ago(1)))
    with caplog.at_level(logging.ERROR, logger="auth_service.services.outbox"):
        second = sender.drain()
    assert (second.sent, second.retry, second.failed) == (0, 0, 1)
    (row,) = outbox_rows(database_url)
    assert (row.attempts, row.next_attempt_at, row.sent_at, row.body) == (2, None, None, "")
    assert row.failed_at is not None and row.last_error == "ConnectionRefusedError"
    assert f"mail {row.id} failed for good after 2 attempts" in caplog.text
    assert to not in caplog.text
    exported = metrics.exposition().decode()
    assert 'authgate_mail_deliveries_total{outcome="retry"} 1.0' in exported
    assert 'authgate_mail_deliveries_total{outcome="failed"} 1.0' in exported
    assert "authgate_mail_outbox_backlog 0.0" in exported


def test_console_mailer_delivers_through_the_outbox(
    make_client: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    api = Api(make_client())  # no SMTP_HOST: the development console mailer
    api.register("ada@example.com")
    with caplog.at_level(logging.WARNING, logger="auth_service.services.mailer"):
        answer = api.client.simulate_post(
            "/api/v1/auth/password-reset", json={"email": "ada@example.com"}
        )
        assert answer.status_code == 202
        # NOTE: the reset mail reaches the outbox only once the reset sender has resolved
        # the request, possibly after the sign-up's mail was already sent.
        sent = until_sent(database_url, count=2)
    # The sign-up's verification mail and the reset mail.
    assert len(sent) == 2
    assert {row.recipient for row in sent} == {"ada@example.com"}
    assert "console mailer (SMTP_HOST unset) to=ada@example.com" in caplog.text
    assert "reset-password?token=" in caplog.text
    assert "verify-email?token=" in caplog.text


def until_sent(database_url: str, timeout: float = 10.0, count: int = 1) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = outbox_rows(database_url)
        if len(found) >= count and all(row.sent_at for row in found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"outbox not sent within {timeout} s: {outbox_rows(database_url)}")


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@pytest.mark.slow
def test_backlog_metric_counts_pending_mail_once_under_two_workers(
    database_url: str, tmp_path: Path
) -> None:
    down = free_port()  # SMTP down: every mail stays pending
    with running_auth_service(
        tmp_path,
        DATABASE_URL=database_url,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(down),
        MAIL_RETRY_BASE_SECONDS="1",
        MAIL_RETRY_MAX_SECONDS="2",
        MAIL_POLL_SECONDS="1",
    ) as base:
        for n in range(3):
            email = f"user{n}@example.com"
            registered = fresh_connection(
                "POST",
                f"{base}/api/v1/auth/register",
                json={"email": email, "password": "correct horse battery"},
            )
            assert registered.status_code == 201, registered.text
            reset = fresh_connection(
                "POST", f"{base}/api/v1/auth/password-reset", json={"email": email}
            )
            assert reset.status_code == 202

        def scrape() -> str:
            answer = fresh_connection("GET", f"{base}/metrics")
            assert answer.status_code == 200
            return answer.text

        deadline = time.monotonic() + 20
        while (
            retries := metric(scrape(), "authgate_mail_deliveries_total", outcome="retry") or 0
        ) < 12:
            assert time.monotonic() < deadline, f"only {retries} retries counted"
            time.sleep(0.1)
        # Whichever worker answers, the backlog is the database's count, never a sum.
        for _ in range(10):
            text = scrape()
            # Three sign-ups' verification mails and three reset mails.
            assert metric(text, "authgate_mail_outbox_backlog") == 6
            assert metric(text, "authgate_password_reset_requests_backlog") == 0
            assert metric(text, "authgate_mail_deliveries_total", outcome="sent") == 0


@pytest.mark.slow
def test_send_mail_forever_delivers_until_sigterm(
    sessions: Any, inbox: tuple[Inbox, int], database_url: str, tmp_path: Path
) -> None:
    mail, port = inbox
    env = cli_env(
        DATABASE_URL=database_url,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(port),
        MAIL_POLL_SECONDS="1",
        AUTHGATE_VAR_DIR=str(tmp_path / "var"),
    )
    with subprocess.Popen(
        [*CLI, "send-mail", "--forever"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as sender:
        try:
            (first,) = enqueue_mails(sessions, 1)
            assert [tos for tos, _ in mail.wait_for(1, timeout=30)] == [[first]]
            # Enqueued after that delivery: only a later poll of the same process finds it.
            with sessions.begin() as db:
                outbox.enqueue(db, to="later@example.com", subject="Later", body="again")
            assert [tos for tos, _ in mail.wait_for(2, timeout=30)] == [
                [first],
                ["later@example.com"],
            ]
            assert [row.attempts for row in until_sent(database_url)] == [1, 1]
        finally:
            sender.send_signal(signal.SIGTERM)
            output, _ = sender.communicate(timeout=30)
    assert sender.returncode == 0, output
    assert "Delivering the mail outbox until stopped" in output
