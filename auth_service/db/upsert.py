"""INSERT ... ON CONFLICT for both supported backends."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.sql.dml import Insert


def insert_ignore(db: DbSession, model: type[Any], values: dict[str, Any]) -> Insert:
    """An insert that silently does nothing when the row's unique key already exists."""
    # NOTE: one branch per dialect, as each module's insert() returns its own typed Insert.
    if db.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model).values(**values).on_conflict_do_nothing()
    return sqlite.insert(model).values(**values).on_conflict_do_nothing()


def insert_or_lock(db: DbSession, model: type[Any], values: dict[str, Any], key: str) -> Insert:
    """Insert the row, or, when its unique `key` exists, lock that row (a no-op update).

    Either way the row exists and is this transaction's until it ends. NOTE: an insert
    that ignores the conflict would lock nothing: a concurrent DELETE could then remove
    the row between the insert and the next statement (PostgreSQL, READ COMMITTED).
    """
    # NOTE: one branch per dialect, as each module's insert() returns its own typed Insert.
    no_op = {key: values[key]}
    if db.get_bind().dialect.name == "postgresql":
        pg = postgresql.insert(model).values(**values)
        return pg.on_conflict_do_update(index_elements=[key], set_=no_op)
    lite = sqlite.insert(model).values(**values)
    return lite.on_conflict_do_update(index_elements=[key], set_=no_op)
