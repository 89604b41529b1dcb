"""Hourly rollups, back-filled from the events already recorded.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEYS = ("use_case", "user", "agent", "key_id", "model", "backend", "deployment", "on_prem")
SUMS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_micro_usd",
)


def upgrade() -> None:
    op.create_table(
        "usage_rollups_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        *(
            sa.Column(name, sa.String(size), primary_key=True)
            for name, size in (
                ("use_case", 128),
                ("user", 128),
                ("agent", 128),
                ("key_id", 64),
                ("model", 128),
                ("backend", 32),
                ("deployment", 256),
            )
        ),
        sa.Column("on_prem", sa.Boolean, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in SUMS),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        hour = "date_trunc('hour', started_at)"
    else:  # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff'
        hour = "substr(started_at, 1, 13) || ':00:00.000000'"
    keys = ", ".join(f'"{k}"' for k in KEYS)
    sums = ", ".join(f"SUM({c})" for c in SUMS)
    op.execute(
        f"INSERT INTO usage_rollups_hourly (hour, {keys}, requests, errors, {', '.join(SUMS)}) "
        f"SELECT {hour}, {keys}, COUNT(*), SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), "
        f"{sums} FROM usage_events GROUP BY {hour}, {keys}"
    )


def downgrade() -> None:
    op.drop_table("usage_rollups_hourly")
