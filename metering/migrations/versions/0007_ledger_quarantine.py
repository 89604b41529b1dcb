"""The ledger quarantine (events the database refused on their data), and model names of up to
256 characters (what intake accepts) in the events and hourly rollups.

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_quarantine",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
    )
    # SQLite does not enforce VARCHAR lengths; rebuilding its tables would cost a copy for nothing.
    if op.get_bind().dialect.name != "sqlite":
        for table in ("usage_events", "usage_rollups_hourly"):
            op.alter_column(
                table, "model", type_=sa.String(256), existing_type=sa.String(128), nullable=False
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        for table in ("usage_events", "usage_rollups_hourly"):
            op.alter_column(
                table, "model", type_=sa.String(128), existing_type=sa.String(256), nullable=False
            )
    op.drop_table("ledger_quarantine")
