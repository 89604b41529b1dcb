"""Per-minute token totals (peak rates) and per-month session totals, back-filled from events:
the live projection and the monthly export no longer read raw events.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_minutes",
        sa.Column("minute", TZ, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "usage_sessions_monthly",
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("session", sa.String(128), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_micro_usd", sa.BigInteger, nullable=False),
        *(
            sa.Column(f"{c}_{m}", sa.String(128), nullable=False)
            for c in ("user", "agent", "use_case")
            for m in ("min", "max")
        ),
        sa.Column("first_started_at", TZ, nullable=False),
        sa.Column("last_started_at", TZ, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        minute = "date_trunc('minute', started_at)"
        month = "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM')"
    else:
        minute = "substr(started_at, 1, 16) || '\\:00.000000'"  # \: is a colon to text()
        month = "substr(started_at, 1, 7)"
    op.execute(
        f"INSERT INTO usage_minutes (minute, requests, input_tokens, output_tokens) "
        f"SELECT {minute}, COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM usage_events "
        f"GROUP BY {minute}"
    )
    minmax = ", ".join(
        f'{m.upper()}("{c}")' for c in ("user", "agent", "use_case") for m in ("min", "max")
    )
    cols = ", ".join(f"{c}_{m}" for c in ("user", "agent", "use_case") for m in ("min", "max"))
    op.execute(
        f"INSERT INTO usage_sessions_monthly (month, session, requests, total_tokens, "
        f"cost_micro_usd, {cols}, first_started_at, last_started_at) "
        f"SELECT {month}, session, COUNT(*), SUM(input_tokens + output_tokens), "
        f"COALESCE(SUM(cost_micro_usd), 0), {minmax}, MIN(started_at), MAX(started_at) "
        f"FROM usage_events GROUP BY {month}, session"
    )


def downgrade() -> None:
    op.drop_table("usage_sessions_monthly")
    op.drop_table("usage_minutes")
