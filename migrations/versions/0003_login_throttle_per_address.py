"""Login throttles per (email, client address) plus a per-email ceiling.

Revision ID: 0003_login_throttle_per_address
Revises: 0002_mail_outbox
Create Date: 2026-12-06

The old table counted failures per email alone, so anyone could lock an owner out. Its
rows cannot be split by client address after the fact, and they are short-lived counters
(at most LOGIN_LOCKOUT_SECONDS old), so the table is recreated empty rather than
converted: upgrading forgets the failures of the last few minutes, nothing else.
Downgrading likewise recreates the old, empty table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_login_throttle_per_address"
down_revision: str | None = "0002_mail_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Replace the per-email counters with per-key counters that know their account."""
    op.drop_table("login_throttles")
    op.create_table(
        "login_throttles",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_hash", name="pk_login_throttles"),
    )
    op.create_index("ix_login_throttles_account_hash", "login_throttles", ["account_hash"])


def downgrade() -> None:
    """Back to one counter per email hash (empty, see the module docstring)."""
    op.drop_index("ix_login_throttles_account_hash", table_name="login_throttles")
    op.drop_table("login_throttles")
    op.create_table(
        "login_throttles",
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("email_hash", name="pk_login_throttles"),
    )
