"""Alembic environment: migrates the auth service database described by our models."""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, Engine

from auth_service.db.base import UTCDateTime
from auth_service.db.models import Base
from auth_service.db.session import make_engine
from auth_service.settings import DEFAULT_DATABASE_URL

config = context.config
# Only the alembic CLI should configure logging; programmatic callers (tests, the app's
# migrate command) keep their own logging setup.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    """Return the URL handed over by the caller, else DATABASE_URL, else the dev SQLite file."""
    return (
        config.attributes.get("database_url")
        or os.environ.get("DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Render our UTCDateTime as the plain column type it stores, so revisions stay stable."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection | None, url: str | None) -> None:
    """Configure the migration context identically for online and offline runs."""
    dialect_name = connection.dialect.name if connection is not None else url.split(":")[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: batch mode recreates the table instead.
        render_as_batch=dialect_name.startswith("sqlite"),
        render_item=_render_item,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout without a database connection (`alembic upgrade --sql`)."""
    _configure(None, _database_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on a live connection of a new engine."""
    engine: Engine = make_engine(_database_url())
    try:
        with engine.connect() as connection:
            _configure(connection, None)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
