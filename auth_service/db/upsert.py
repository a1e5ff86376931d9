"""INSERT ... ON CONFLICT DO NOTHING for both supported backends."""

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
