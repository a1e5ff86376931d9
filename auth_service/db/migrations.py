"""Run the Alembic migrations programmatically and compare the migrated schema with the models."""

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from auth_service.db.models import Base
from auth_service.db.session import make_engine
from auth_service.settings import REPO_ROOT

MIGRATIONS_DIR = REPO_ROOT / "migrations"


def alembic_config(database_url: str) -> Config:
    """Return an Alembic config for this repository's migrations, bound to `database_url`."""
    # NOTE: no ini file: the path would depend on the working directory, and its logging
    # section would reconfigure the caller's loggers.
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision`."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Downgrade the database to `revision` (everything, by default)."""
    command.downgrade(alembic_config(database_url), revision)


def pending_diff(database_url: str) -> list[Any]:
    """Return the differences between the database schema and the models; empty when they agree."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()
