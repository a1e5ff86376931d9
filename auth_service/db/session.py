"""Engine and sessionmaker factories for PostgreSQL and SQLite."""

from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker


def _set_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    """Turn on foreign keys (cascades), WAL and a busy timeout on every new SQLite connection."""
    cursor = dbapi_connection.cursor()
    try:
        # SQLite ignores ON DELETE CASCADE unless foreign keys are enabled per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets readers proceed while one writer commits (several gunicorn workers).
        cursor.execute("PRAGMA journal_mode=WAL")
        # Wait for a competing writer instead of failing at once with "database is locked".
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def make_engine(
    database_url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: int = 5,
    hide_parameters: bool = False,
) -> Engine:
    """Create an engine with fail-fast pool settings (PostgreSQL) or safe pragmas (SQLite).

    A request waits at most `pool_timeout` seconds for one of the pool's
    `pool_size + max_overflow` connections, then gets a 503 (never a 500 or a hang).
    `hide_parameters` keeps statement parameters out of SQL logs and error messages.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False}, hide_parameters=hide_parameters
        )
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    # A database outage must be a fast 503, not a hang until gunicorn kills the worker.
    connect_args = {"connect_timeout": 3} if url.get_backend_name() == "postgresql" else {}
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args=connect_args,
        hide_parameters=hide_parameters,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[DbSession]:
    """Create the sessionmaker; objects stay readable after commit (responders serialise them)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def rows_changed(db: DbSession, statement: Executable) -> int:
    """Run an UPDATE/DELETE and return how many rows it changed (the arbiter of races)."""
    result = db.execute(statement)
    return cast(CursorResult[Any], result).rowcount
