"""Mail delivery: SMTP when configured, the log otherwise (development)."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage
from typing import Protocol

from auth_service.services.emails import smtp_address

log = logging.getLogger(__name__)


class Mailer(Protocol):
    """Something that delivers a plain-text email."""

    def send(self, *, to: str, subject: str, body: str) -> None:
        """Deliver one message or raise."""


class SmtpMailer:
    """Delivers through an SMTP server (SMTP_HOST, SMTP_PORT, optional STARTTLS and login)."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout

    def send(self, *, to: str, subject: str, body: str) -> None:
        """Send one message over a fresh SMTP connection."""
        to = smtp_address(to)
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            if self._starttls:
                smtp.starttls()
            if self._username and self._password:
                smtp.login(self._username, self._password)
            smtp.send_message(message)


class ConsoleMailer:
    """Development mailer: writes the message to the log instead of sending it."""

    def send(self, *, to: str, subject: str, body: str) -> None:
        """Log the message (it contains a reset link: never use this in production)."""
        log.warning("console mailer (SMTP_HOST unset) to=%s subject=%s\n%s", to, subject, body)
