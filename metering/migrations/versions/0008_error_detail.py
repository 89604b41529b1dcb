"""The error detail on every event: the exception class of an ``internal_error``, the status an
upstream failed with. Past events get "" (not known). Only the events table: the hourly rollups
keep grouping by error code, and ``/admin/usage`` groups by detail from the events.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(
            sa.Column("error_detail", sa.String(128), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("error_detail")
