"""Daily rollups (the hourly ones summed per UTC day, back-filled from them), so windows of
weeks and months read ~24x fewer rows; and on PostgreSQL, room in the rollup tables' pages
(fillfactor 50) for the in-place (HOT) updates every batch makes to its hour's, day's, minute's
and sessions' rows, which otherwise leave a dead copy per update behind.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

KEYS = (
    "use_case",
    "user",
    "agent",
    "key_id",
    "team",
    "end_user",
    "error_code",
    "model",
    "backend",
    "deployment",
    "on_prem",
)
SUMS = (
    "requests",
    "errors",
    "unpriced_requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_micro_usd",
)
LENGTHS = {"key_id": 64, "error_code": 64, "model": 256, "backend": 32, "deployment": 256}
UPDATED = ("usage_rollups_daily", "usage_rollups_hourly", "usage_minutes", "usage_sessions_monthly")


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "usage_rollups_daily",
        sa.Column("day", sa.DateTime(timezone=True), primary_key=True),
        *(
            sa.Column(
                k,
                sa.Boolean if k == "on_prem" else sa.String(LENGTHS.get(k, 128)),
                primary_key=True,
            )
            for k in KEYS
        ),
        *(sa.Column(c, sa.BigInteger, nullable=False) for c in SUMS),
    )
    day = (
        "date_trunc('day', hour, 'UTC')" if pg else "substr(hour, 1, 10) || ' 00\\:00\\:00.000000'"
    )
    keys = ", ".join(f'"{k}"' for k in KEYS)
    op.execute(
        f"INSERT INTO usage_rollups_daily (day, {keys}, {', '.join(SUMS)}) "
        f"SELECT {day}, {keys}, {', '.join(f'SUM({c})' for c in SUMS)} "
        f"FROM usage_rollups_hourly GROUP BY {day}, {keys}"
    )
    if pg:
        for table in UPDATED:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in UPDATED[1:]:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    op.drop_table("usage_rollups_daily")
