"""OAuth 2.0 grants: pending authorizations (the sign-in pages), authorization codes, and
the client and scope of the sessions an OAuth grant opens.

Revision ID: 0009_oauth_grants
Revises: 0006_oauth_clients
Create Date: 2026-12-06

An OAuth grant for a user opens an ordinary `sessions` row (so its refresh tokens rotate
with reuse detection and its revocation reaches the gateway); `client_id` and `scope`
are NULL for first-party sessions.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_oauth_grants"
down_revision: str | None = "0006_oauth_clients"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _request_columns() -> list[sa.Column[object]]:
    """The validated authorization request both tables keep."""
    return [
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("code_challenge_method", sa.String(length=8), nullable=False),
    ]


def upgrade() -> None:
    """Add the session columns and the two grant tables."""
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("client_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("scope", sa.Text(), nullable=True))
    op.create_table(
        "oauth_pending_authorizations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf_hash", sa.String(length=64), nullable=False),
        *_request_columns(),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("mfa_token_hash", sa.String(length=64), nullable=True),
        sa.Column("amr", sa.String(length=64), nullable=True),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_pending_authorizations"),
        sa.UniqueConstraint("browser_hash", name="uq_oauth_pending_authorizations_browser_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_oauth_pending_authorizations_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_oauth_pending_authorizations_expires_at",
        "oauth_pending_authorizations",
        ["expires_at"],
    )
    op.create_table(
        "oauth_authorization_codes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        *_request_columns(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("amr", sa.String(length=64), nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_authorization_codes"),
        sa.UniqueConstraint("code_hash", name="uq_oauth_authorization_codes_code_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_oauth_authorization_codes_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_oauth_authorization_codes_user_id", "oauth_authorization_codes", ["user_id"]
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_oauth_authorization_codes_user_id", table_name="oauth_authorization_codes")
    op.drop_table("oauth_authorization_codes")
    op.drop_index(
        "ix_oauth_pending_authorizations_expires_at", table_name="oauth_pending_authorizations"
    )
    op.drop_table("oauth_pending_authorizations")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("scope")
        batch.drop_column("client_id")
