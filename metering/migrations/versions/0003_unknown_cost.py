"""Cost may be unknown (no price for the model): nullable event cost, unpriced count in rollups.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.alter_column("cost_micro_usd", existing_type=sa.BigInteger, nullable=True)
    with op.batch_alter_table("usage_rollups_hourly") as batch:
        batch.add_column(
            sa.Column("unpriced_requests", sa.BigInteger, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups_hourly") as batch:
        batch.drop_column("unpriced_requests")
    op.execute("UPDATE usage_events SET cost_micro_usd = 0 WHERE cost_micro_usd IS NULL")
    with op.batch_alter_table("usage_events") as batch:
        batch.alter_column("cost_micro_usd", existing_type=sa.BigInteger, nullable=False)
