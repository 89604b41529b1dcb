"""Usage events, virtual keys, shared counters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=False),
        *(
            sa.Column(name, sa.String(size), nullable=False)
            for name, size in (
                ("key_id", 64),
                ("user", 128),
                ("agent", 128),
                ("session", 128),
                ("use_case", 128),
                ("model", 128),
                ("backend", 32),
                ("deployment", 256),
                ("upstream_model", 256),
            )
        ),
        sa.Column("on_prem", sa.Boolean, nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        *(
            sa.Column(name, sa.BigInteger, nullable=False)
            for name in (
                "input_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "cache_write_1h_tokens",
                "output_tokens",
                "reasoning_tokens",
            )
        ),
        sa.Column("usage_source", sa.String(16), nullable=False),
        sa.Column("cost_micro_usd", sa.BigInteger, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("ttft_s", sa.Float, nullable=True),
        sa.Column("overhead_s", sa.Float, nullable=False),
    )
    op.create_index("ix_usage_events_started_at", "usage_events", ["started_at"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("team", sa.String(128), nullable=True),
        sa.Column("use_case", sa.String(128), nullable=True),
        sa.Column("agent", sa.String(128), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
    )
    op.create_table(
        "tokenmeter_meta",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tokenmeter_meta")
    op.drop_table("api_keys")
    op.drop_index("ix_usage_events_started_at", table_name="usage_events")
    op.drop_table("usage_events")
