"""The durable mail outbox: mail is a row written in the caller's transaction, then sent.

`enqueue` is the only way the service sends mail. A `MailSender` delivers due rows with
retries and exponential backoff. Its state lives in the database only, so a restart, a
crashed worker or an SMTP outage loses nothing, and any number of senders (one thread per
gunicorn worker, `python -m auth_service.cli send-mail`) may run at once: a row is claimed
by a conditional UPDATE that exactly one of them wins (on PostgreSQL and SQLite alike).
"""

from __future__ import annotations

import logging
import smtplib
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service.db.models import MailOutbox, PasswordResetRequest, utcnow
from auth_service.db.session import rows_changed
from auth_service.services.mailer import Mailer

log = logging.getLogger(__name__)

# NOTE: a claim holds a row this long. It must outlast one delivery (SmtpMailer's socket
# timeout is 10 s); a sender that dies mid-delivery leaves the row due again after it.
CLAIM_LEASE = timedelta(seconds=60)
# Due rows read per claim: enough that senders racing for the oldest still find one.
CANDIDATES = 20
DELIVERY_OUTCOMES = ("sent", "retry", "failed")


def enqueue(db: DbSession, *, to: str, subject: str, body: str) -> uuid.UUID:
    """Add one mail to the outbox in `db`'s transaction: it exists if and only if that commits."""
    row = MailOutbox(id=uuid.uuid4(), recipient=to, subject=subject, body=body, attempts=0)
    db.add(row)
    return row.id


class DeliveryEvents(Protocol):
    """Receives each delivery attempt's outcome (one of DELIVERY_OUTCOMES); metrics do."""

    def mail_delivery(self, outcome: str) -> None:
        """Count one attempt."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: base, 2 x base, 4 x base ... capped; failed after max_attempts."""

    base_seconds: int = 10
    max_seconds: int = 3600
    max_attempts: int = 12

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt."""
        # NOTE: the exponent is bounded so the power stays small whatever max_attempts is.
        seconds = self.base_seconds * 2 ** min(attempts - 1, 32)
        return timedelta(seconds=min(seconds, self.max_seconds))


@dataclass
class DrainReport:
    """What one drain did."""

    prepared: int = 0
    sent: int = 0
    retry: int = 0
    failed: int = 0

    def count(self, outcome: str) -> None:
        """Count one delivery attempt (one of DELIVERY_OUTCOMES)."""
        setattr(self, outcome, getattr(self, outcome) + 1)


@dataclass(frozen=True)
class Backlog:
    """Work not done yet: mail to deliver and reset requests to resolve."""

    mail: int
    reset_requests: int


class MailSender:
    """Delivers the outbox; `producers` run first (they turn queued work into mail)."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        mailer: Mailer,
        retry: RetryPolicy,
        *,
        producers: Sequence[Callable[[], int]] = (),
        events: DeliveryEvents | None = None,
        poll_seconds: float = 5.0,
        doorbell: threading.Event | None = None,
    ) -> None:
        self._sessions = sessions
        self._mailer = mailer
        self._retry = retry
        self._producers = producers
        self._events = events
        self._poll_seconds = poll_seconds
        self._doorbell = doorbell or threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def drain(self, progress: Callable[[uuid.UUID, str], None] | None = None) -> DrainReport:
        """Run the producers, then attempt every due mail once; `progress` hears each.

        A `stop` ends it after the delivery in hand (the rest stays due for the next sender).
        """
        report = DrainReport()
        for produce in self._producers:
            report.prepared += produce()
        while not self._stopping.is_set() and (row_id := self._claim_next()) is not None:
            outcome = self._deliver(row_id)
            report.count(outcome)
            if progress is not None:
                progress(row_id, outcome)
        return report

    def backlog(self) -> Backlog | None:
        """Mail not yet sent (nor given up on) and reset requests not yet resolved.

        None when the database does not answer (a scrape then simply lacks the gauges).
        """
        try:
            with self._sessions() as db:
                mail = db.scalar(
                    select(func.count()).where(MailOutbox.next_attempt_at.is_not(None))
                )
                requests = db.scalar(select(func.count()).select_from(PasswordResetRequest))
        except SQLAlchemyError:
            return None
        return Backlog(mail=mail or 0, reset_requests=requests or 0)

    def start(self) -> None:
        """Deliver in a daemon thread of this process until `stop`: woken by the doorbell."""
        self._thread = threading.Thread(target=self.run, name="mail-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the thread to finish its current delivery and end; wait for it."""
        self._stopping.set()
        self._doorbell.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Drain, then sleep until rung or `poll_seconds` pass; until `stop` (or a signal)."""
        while not self._stopping.is_set():
            try:
                self.drain()
            except SQLAlchemyError as ex:
                # NOTE: the rows wait in the database; the next round retries them.
                log.warning("mail outbox: database unavailable (%s)", type(ex).__name__)
            except Exception:
                log.exception("mail outbox: drain failed")
            self._doorbell.wait(self._poll_seconds)
            self._doorbell.clear()

    def _claim_next(self) -> uuid.UUID | None:
        """Claim the most overdue row another sender does not hold; None when none is due."""
        now = utcnow()
        with self._sessions() as db:
            due = db.scalars(
                select(MailOutbox.id)
                .where(MailOutbox.next_attempt_at <= now)
                .order_by(MailOutbox.next_attempt_at)
                .limit(CANDIDATES)
            ).all()
        # NOTE: one row at a time, so a stop leaves nothing claimed but the mail in hand,
        # and senders running side by side share the backlog instead of batching it.
        return next((row_id for row_id in due if self._claim(row_id, now)), None)

    def _claim(self, row_id: uuid.UUID, now: datetime) -> bool:
        # SECURITY: the WHERE re-checks that the row is still due, so of two senders racing
        # for it exactly one changes it (PostgreSQL re-evaluates after the winner commits;
        # SQLite serialises writers). The lease keeps it from the others while we send.
        with self._sessions.begin() as db:
            return (
                rows_changed(
                    db,
                    update(MailOutbox)
                    .where(MailOutbox.id == row_id, MailOutbox.next_attempt_at <= now)
                    .values(next_attempt_at=now + CLAIM_LEASE, attempts=MailOutbox.attempts + 1),
                )
                == 1
            )

    def _deliver(self, row_id: uuid.UUID) -> str:
        """Send one claimed row and record the outcome: sent, retry or failed."""
        with self._sessions() as db:
            row = db.get_one(MailOutbox, row_id)
            db.expunge(row)
        try:
            self._mailer.send(to=row.recipient, subject=row.subject, body=row.body)
        except Exception as ex:
            return self._record_failure(row, _describe(ex))
        # SECURITY: a sent mail's body (it may hold a live reset link) is not kept.
        self._finish(row_id, sent_at=utcnow(), next_attempt_at=None, body="", last_error=None)
        return self._count("sent")

    def _record_failure(self, row: MailOutbox, error: str) -> str:
        if row.attempts >= self._retry.max_attempts:
            log.error("mail %s failed for good after %d attempts: %s", row.id, row.attempts, error)
            self._finish(
                row.id, failed_at=utcnow(), next_attempt_at=None, body="", last_error=error
            )
            return self._count("failed")
        retry_at = utcnow() + self._retry.delay(row.attempts)
        log.warning(
            "mail %s attempt %d failed (%s); retry at %s", row.id, row.attempts, error, retry_at
        )
        self._finish(row.id, next_attempt_at=retry_at, last_error=error)
        return self._count("retry")

    def _finish(self, row_id: uuid.UUID, **values: object) -> None:
        with self._sessions.begin() as db:
            db.execute(update(MailOutbox).where(MailOutbox.id == row_id).values(**values))

    def _count(self, outcome: str) -> str:
        if self._events is not None:
            self._events.mail_delivery(outcome)
        return outcome


def _describe(ex: Exception) -> str:
    """The error class (and SMTP code): never its message, which may quote the mail."""
    if isinstance(ex, smtplib.SMTPResponseException):
        return f"{type(ex).__name__} {ex.smtp_code}"
    return type(ex).__name__
