"""Fallback attempts: the request id shared by a request's attempts, and the attempt number.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("request_id", sa.String(26), nullable=False, server_default=""))
        batch.add_column(sa.Column("attempt", sa.Integer, nullable=False, server_default="1"))
    op.execute("UPDATE usage_events SET request_id = id WHERE request_id = ''")


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("attempt")
        batch.drop_column("request_id")
