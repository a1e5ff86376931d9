"""The revocation feed: one row per revoked session, read by the gateway.

Revision ID: 0004_session_revocations
Revises: 0003_login_throttle_per_address
Create Date: 2026-12-06

No foreign key to sessions on purpose: a deleted user's sessions disappear with the
user, and the gateway must still learn that they ended.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_session_revocations"
down_revision: str | None = "0003_login_throttle_per_address"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create session_revocations."""
    op.create_table(
        "session_revocations",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_session_revocations"),
    )
    op.create_index("ix_session_revocations_revoked_at", "session_revocations", ["revoked_at"])
    # Sessions revoked before this revision reach the gateway too; the feed purges the
    # ones whose access tokens have long expired.
    op.execute(
        "INSERT INTO session_revocations (session_id, revoked_at) "
        "SELECT id, revoked_at FROM sessions WHERE revoked_at IS NOT NULL"
    )


def downgrade() -> None:
    """Drop session_revocations."""
    op.drop_index("ix_session_revocations_revoked_at", table_name="session_revocations")
    op.drop_table("session_revocations")
