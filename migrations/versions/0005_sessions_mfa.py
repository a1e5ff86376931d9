"""Sessions you can list (last use, authentication methods) and a TOTP second factor.

Revision ID: 0005_sessions_mfa
Revises: 0004_session_revocations
Create Date: 2026-12-06

Existing sessions get `amr` "pwd" (they were opened with a password alone) and no
`last_used_at` (unknown until their next refresh); existing users have MFA off.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_sessions_mfa"
down_revision: str | None = "0004_session_revocations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the session and user columns and the three MFA tables."""
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("amr", sa.String(length=64), nullable=False, server_default="pwd")
        )
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("mfa_enabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "totp_credentials",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("secret_encrypted", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name="pk_totp_credentials"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_totp_credentials_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_recovery_codes"),
        sa.UniqueConstraint("code_hash", name="uq_recovery_codes_code_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_recovery_codes_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_recovery_codes_user_id", "recovery_codes", ["user_id"])
    op.create_table(
        "mfa_challenges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mfa_challenges"),
        sa.UniqueConstraint("token_hash", name="uq_mfa_challenges_token_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_mfa_challenges_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_mfa_challenges_user_id", "mfa_challenges", ["user_id"])


def downgrade() -> None:
    """Drop what upgrade added, children first."""
    op.drop_index("ix_mfa_challenges_user_id", table_name="mfa_challenges")
    op.drop_table("mfa_challenges")
    op.drop_index("ix_recovery_codes_user_id", table_name="recovery_codes")
    op.drop_table("recovery_codes")
    op.drop_table("totp_credentials")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("mfa_enabled")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("amr")
        batch.drop_column("last_used_at")
