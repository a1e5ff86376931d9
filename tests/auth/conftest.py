"""Fixtures for the auth service: settings -> migrated database -> app -> client.

Every behaviour test runs twice, on the real PostgreSQL and on the embedded SQLite.
The schema is migrated once per backend; each test starts from empty tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from auth_api import Api
from falcon import testing
from process_support import free_port
from smtp_inbox import Inbox, smtp_server

from auth_service.app import create_service
from auth_service.db.migrations import upgrade
from auth_service.db.models import Base
from auth_service.settings import DEFAULT_SPEC_PATH, Settings
from auth_service.spec import Contract


@pytest.fixture(scope="session")
def contract() -> Contract:
    """The spec, loaded and validated once for the whole run."""
    return Contract.from_file(DEFAULT_SPEC_PATH)


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the test run's dev signing keys live (one key for the whole run)."""
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database file for this run."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'auth.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def migrated_postgres(postgres_database: str) -> str:
    """The run's PostgreSQL database, migrated to head."""
    upgrade(postgres_database)
    return postgres_database


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database with empty tables, on each backend in turn."""
    name = "migrated_postgres" if request.param == "postgresql" else "sqlite_database"
    url: str = request.getfixturevalue(name)
    empty_tables(url)
    yield url


def empty_tables(url: str) -> None:
    """Delete every row, children first, keeping the schema."""
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    engine.dispose()


@pytest.fixture
def settings(database_url: str, var_dir: Path) -> Settings:
    """Test settings: cheap bcrypt, strict response validation."""
    return Settings(
        database_url=database_url,
        var_dir=var_dir,
        spec_path=DEFAULT_SPEC_PATH,
        bcrypt_rounds=4,
        response_validation="strict",
    )


AppFactory = Callable[..., testing.TestClient]


@pytest.fixture
def make_client(settings: Settings, contract: Contract) -> Iterator[AppFactory]:
    """Build a client for an app with some settings changed.

    Each app's mail sender runs in a thread, as in a gunicorn worker, and is stopped
    afterwards: a sender outliving its test would deliver the next test's mail.
    """
    senders = []

    def build(mailer: Any = None, **overrides: Any) -> testing.TestClient:
        changed = dataclasses.replace(settings, **overrides)
        service = create_service(changed, mailer=mailer, contract=contract)
        if changed.mail_sender_in_process:
            service.mail_sender.start()
            senders.append(service.mail_sender)
        return testing.TestClient(service.app)

    yield build
    for sender in senders:
        sender.stop()


@pytest.fixture
def client(make_client: AppFactory) -> testing.TestClient:
    """A client of the app with the default test settings."""
    return make_client()


@pytest.fixture
def api(client: testing.TestClient) -> Api:
    """API helpers over the default client."""
    return Api(client)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server (aiosmtpd) on a free port: what it received, and its port."""
    port = free_port()
    with smtp_server(port) as handler:
        yield handler, port
