"""A real SMTP server (aiosmtpd) that keeps what it receives, and reset/verify-link helpers."""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from aiosmtpd.controller import Controller

RESET_URL = "https://app.example.com/reset"
LINK = re.compile(r"https://app\.example\.com/reset\?token=([A-Za-z0-9_\-]+)")
VERIFY_URL = "https://app.example.com/verify"
VERIFY_LINK = re.compile(r"https://app\.example\.com/verify\?token=([A-Za-z0-9_\-]+)")
# Subjects of the service's mails (auth_service/services/*.py), to tell them apart.
RESET_SUBJECT = "Reset your password"
VERIFY_SUBJECT = "Verify your email address"
SIGN_UP_ATTEMPT_SUBJECT = "Someone tried to sign up with your email address"


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

    def wait_for(self, count: int, timeout: float = 10.0, *, subject: str | None = None) -> list:
        """The messages (only those with `subject`, if given) once there are `count`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(found := self.with_subject(subject)) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} mails ({subject or 'any subject'}) within {timeout} s, "
            f"got {len(self.with_subject(subject))}"
        )

    def with_subject(self, subject: str | None) -> list:
        """The messages so far with this subject (all of them for None)."""
        with self._lock:
            return [m for m in self.messages if subject is None or m[1]["Subject"] == subject]


@contextlib.contextmanager
def smtp_server(port: int, inbox: Inbox | None = None) -> Iterator[Inbox]:
    """An SMTP server on 127.0.0.1:`port` delivering into `inbox` (a new one by default)."""
    handler = inbox or Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def reset_token_from(message: email.message.EmailMessage) -> str:
    """The token of the one reset link in a mail."""
    body = message.get_content()
    found = LINK.findall(body)
    assert len(found) == 1, body
    return found[0]


def verification_token_from(message: email.message.EmailMessage) -> str:
    """The token of the one verification link in a mail."""
    body = message.get_content()
    found = VERIFY_LINK.findall(body)
    assert len(found) == 1, body
    return found[0]
