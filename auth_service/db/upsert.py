"""INSERT ... ON CONFLICT DO NOTHING for both supported backends."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.sql.dml import Insert


def insert_ignore(db: DbSession, model: type[Any], values: dict[str, Any]) -> Insert:
    """An insert that silently does nothing when the row's unique key already exists."""
    dialect = db.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model).values(**values).on_conflict_do_nothing()
