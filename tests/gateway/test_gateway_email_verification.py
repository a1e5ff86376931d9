"""Email verification from the outside: the real gateway in front of the real auth service
(both under gunicorn), mail delivered by the service's outbox sender to a real SMTP server
(aiosmtpd), on PostgreSQL and on SQLite, with REQUIRE_EMAIL_VERIFICATION off and on.

The token is only ever read from the mail that arrived; the database is read to check
what the answers claim.
"""

from __future__ import annotations

import contextlib
import email
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import sqlalchemy
from gateway_support import Gateway, launch_gateway
from process_support import REPO, free_port, running_auth_service

sys.path.insert(0, str(REPO / "tests" / "auth"))  # the aiosmtpd inbox of the auth tests
from smtp_inbox import (
    SIGN_UP_ATTEMPT_SUBJECT,
    VERIFY_SUBJECT,
    VERIFY_URL,
    Inbox,
    smtp_server,
    verification_token_from,
)

from auth_service.db.models import EmailVerificationToken, User

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
PROBLEMS = "https://authgate.dev/problems/"
REGISTER_ACCEPTED = {"detail": "Check your inbox: we sent a mail to this address."}


class Stack:
    """An auth service + gateway + SMTP inbox, and the database the service writes."""

    def __init__(self, auth_url: str, gateway: Gateway, inbox: Inbox, database_url: str) -> None:
        self.auth_url = auth_url
        self.gateway = gateway
        self.inbox = inbox
        self.database_url = database_url
        self.http = requests.Session()
        self.http.trust_env = False

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"{self.gateway.url}/api/v1{path}"
        return self.http.request(method, url, headers=headers, timeout=30, **kw)

    def register(self, address: str, password: str = PASSWORD) -> Any:
        return self.call("POST", "/auth/register", json={"email": address, "password": password})

    def login(self, address: str, password: str = PASSWORD) -> Any:
        return self.call("POST", "/auth/login", json={"email": address, "password": password})

    def verify(self, token: str) -> Any:
        return self.call("POST", "/auth/verify-email", json={"token": token})

    def mails(self, to: str, subject: str, count: int = 1, timeout: float = 20.0) -> list[Any]:
        """The first `count` mails with `subject` to `to`, waiting for them to arrive."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for tos, m in self.inbox.with_subject(subject) if tos == [to]]
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"{count} x {subject!r} to {to}: got {found}"
            time.sleep(0.05)

    def token(self, to: str, count: int = 1) -> str:
        return verification_token_from(self.mails(to, VERIFY_SUBJECT, count)[count - 1])

    def user(self, address: str) -> Any:
        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return connection.execute(
                    sqlalchemy.select(User.__table__).where(User.email == address)
                ).one()
        finally:
            engine.dispose()

    def tokens_of(self, address: str) -> list[Any]:
        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return list(
                    connection.execute(
                        sqlalchemy.select(EmailVerificationToken.__table__).where(
                            EmailVerificationToken.email == address
                        )
                    )
                )
        finally:
            engine.dispose()


StackFactory = Callable[[str, bool], Stack]


@pytest.fixture(scope="module")
def stacks(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[StackFactory]:
    """Stacks by (backend, REQUIRE_EMAIL_VERIFICATION), started on first use."""
    started: dict[tuple[str, bool], Stack] = {}
    with contextlib.ExitStack() as exits:

        def stack(backend: str, required: bool) -> Stack:
            if (backend, required) in started:
                return started[backend, required]
            root = tmp_path_factory.mktemp(f"verify-{backend}-{required}")
            if backend == "postgresql":
                database_url = request.getfixturevalue("postgres_database")
            else:
                database_url = f"sqlite:///{root / 'auth.db'}"
            smtp_port = free_port()
            inbox = exits.enter_context(smtp_server(smtp_port))
            auth_url = exits.enter_context(
                running_auth_service(
                    root,
                    workers=2,
                    DATABASE_URL=database_url,
                    REDIS_URL=redis_url,
                    SMTP_HOST="127.0.0.1",
                    SMTP_PORT=str(smtp_port),
                    SMTP_FROM="noreply@authgate.test",
                    EMAIL_VERIFICATION_URL=VERIFY_URL,
                    REQUIRE_EMAIL_VERIFICATION=str(required).lower(),
                    MAIL_POLL_SECONDS="1",
                    TRUSTED_PROXIES="127.0.0.1/32",
                    LOG_FORMAT="console",
                )
            )
            gateway = launch_gateway(
                {
                    "AUTH_SERVICE_URL": auth_url,
                    "REDIS_URL": redis_url,
                    "GATEWAY_RATE_LIMIT_KEY_PREFIX": f"test-gw:{uuid.uuid4().hex}:rl:",
                    "RATE_LIMIT_AUTH": "100000/minute",
                    "RATE_LIMIT_DEFAULT": "100000/minute",
                }
            )
            exits.callback(gateway.stop)
            started[backend, required] = Stack(auth_url, gateway, inbox, database_url)
            return started[backend, required]

        yield stack


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def new_address() -> str:
    return f"verify-{uuid.uuid4().hex[:12]}@example.com"


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEMS + slug, body
    return body


def test_register_mail_verify_once(stacks: StackFactory, backend: str) -> None:
    stack = stacks(backend, False)
    address = new_address()
    created = stack.register(address)
    assert created.status_code == 201, created.text
    assert created.json()["email_verified"] is False
    assert stack.user(address).email_verified is False

    message = stack.mails(address, VERIFY_SUBJECT)[0]
    assert message["From"] == "noreply@authgate.test"
    token = verification_token_from(message)
    (stored,) = stack.tokens_of(address)
    assert token not in str(tuple(stored))

    done = stack.verify(token)
    assert done.status_code == 204, done.text
    assert stack.user(address).email_verified is True
    assert stack.tokens_of(address)[0].used_at is not None
    pair = stack.login(address).json()
    me = stack.call("GET", "/auth/me", pair["access_token"])
    assert me.json()["email_verified"] is True

    assert_problem(stack.verify(token), 400, "invalid-verification-token")


def test_expired_token_is_refused(stacks: StackFactory, backend: str) -> None:
    stack = stacks(backend, False)
    address = new_address()
    assert stack.register(address).status_code == 201
    token = stack.token(address)
    engine = sqlalchemy.create_engine(stack.database_url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.update(EmailVerificationToken)
            .where(EmailVerificationToken.email == address)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    engine.dispose()
    assert_problem(stack.verify(token), 400, "invalid-verification-token")
    assert stack.user(address).email_verified is False


def test_resend_and_email_change(stacks: StackFactory, backend: str) -> None:
    stack = stacks(backend, False)
    address = new_address()
    assert stack.register(address).status_code == 201
    first = stack.token(address)
    pair = stack.login(address).json()

    resent = stack.call("POST", "/auth/verify-email/resend", pair["access_token"])
    assert resent.status_code == 202, resent.text
    second = stack.token(address, count=2)
    assert_problem(stack.verify(first), 400, "invalid-verification-token")
    assert stack.verify(second).status_code == 204
    assert stack.user(address).email_verified is True

    moved = new_address()
    me = stack.call("GET", "/auth/me", pair["access_token"]).json()
    changed = stack.call(
        "PUT", f"/users/{me['id']}", pair["access_token"], json={"email": moved.upper()}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == moved
    assert changed.json()["email_verified"] is False
    assert stack.user(moved).email_verified is False
    assert stack.verify(stack.token(moved)).status_code == 204
    assert stack.user(moved).email_verified is True


def test_required_register_looks_alike_and_login_waits_for_the_mail(
    stacks: StackFactory, backend: str
) -> None:
    stack = stacks(backend, True)
    address = new_address()
    new = stack.register(address)
    assert new.status_code == 202, new.text
    assert new.json() == REGISTER_ACCEPTED
    token = stack.token(address)

    assert_problem(stack.login(address, "a wrong password"), 401, "invalid-credentials")
    assert_problem(stack.login(address), 403, "email-not-verified")
    assert stack.verify(token).status_code == 204
    assert stack.login(address).status_code == 200

    taken = stack.register(address.upper(), "someone else's password")
    assert taken.status_code == new.status_code
    assert taken.content == new.content
    volatile = {"date", "x-request-id", "ratelimit-remaining", "ratelimit-reset"}
    assert {k.lower() for k in taken.headers} == {k.lower() for k in new.headers}
    assert {k.lower(): v for k, v in taken.headers.items() if k.lower() not in volatile} == {
        k.lower(): v for k, v in new.headers.items() if k.lower() not in volatile
    }
    warning = stack.mails(address, SIGN_UP_ATTEMPT_SUBJECT)[0]
    assert isinstance(warning, email.message.EmailMessage)
    assert "already has one" in warning.get_content()
    assert stack.login(address, "someone else's password").status_code == 401
    assert stack.login(address).status_code == 200


def test_resend_is_in_the_gateways_auth_bucket(stacks: StackFactory, redis_url: str) -> None:
    stack = stacks("sqlite", False)
    address = new_address()
    assert stack.register(address).status_code == 201
    pair = stack.login(address).json()
    strict = launch_gateway(
        {
            "AUTH_SERVICE_URL": stack.auth_url,
            "REDIS_URL": redis_url,
            "GATEWAY_RATE_LIMIT_KEY_PREFIX": f"test-gw:{uuid.uuid4().hex}:rl:",
            "RATE_LIMIT_AUTH": "2/minute",
            "RATE_LIMIT_DEFAULT": "100000/minute",
        },
        workers=1,
    )
    try:
        url = f"{strict.url}/api/v1/auth/verify-email/resend"
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        answers = [requests.post(url, headers=headers, timeout=30) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 429], answers[-1].text
        assert answers[-1].json()["type"] == PROBLEMS + "rate-limited"
        # Other operations have their own buckets: /auth/me is not limited by this.
        me = requests.get(f"{strict.url}/api/v1/auth/me", headers=headers, timeout=30)
        assert me.status_code == 200
    finally:
        strict.stop()
