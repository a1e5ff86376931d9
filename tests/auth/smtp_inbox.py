"""A real SMTP server (aiosmtpd) that keeps what it receives, and reset-link helpers."""

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
