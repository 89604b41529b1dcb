"""Chargeback: team, end user, user source and error code on every event and hourly rollup;
service keys; budgets. Past events and rollups get their team from the key table.

Back-fill of the past: an event whose user equals its key's user came from the key, any other
user was declared by the client (and is also its end user). Requests that spent no tokens cost
nothing, so they are no longer unpriced. The hourly rollups are rebuilt with the new key columns
from the old rollups (not from the events, which retention may have pruned).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
OLD_KEYS = ("use_case", "user", "agent", "key_id", "model", "backend", "deployment", "on_prem")
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
_NO_TOKENS = "input_tokens = 0 AND output_tokens = 0"
_KEY_TEAM = "(SELECT COALESCE(k.team, 'unknown') FROM api_keys k WHERE k.id = {t}.key_id)"


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("service", sa.Boolean, nullable=False, server_default="0"))
    with op.batch_alter_table("usage_events") as batch:
        for name, size, default in (
            ("team", 128, "unknown"),
            ("end_user", 128, "unknown"),
            ("user_source", 16, "unknown"),
            ("error_code", 64, ""),
        ):
            batch.add_column(
                sa.Column(name, sa.String(size), nullable=False, server_default=default)
            )
    op.execute(
        f"UPDATE usage_events SET team = COALESCE({_KEY_TEAM.format(t='usage_events')}, 'unknown')"
    )
    op.execute(
        'UPDATE usage_events SET user_source = CASE WHEN "user" = (SELECT k."user" FROM api_keys '
        "k WHERE k.id = usage_events.key_id) THEN 'key' WHEN \"user\" = 'unknown' THEN 'unknown' "
        "ELSE 'declared' END"
    )
    op.execute("UPDATE usage_events SET end_user = \"user\" WHERE user_source = 'declared'")
    op.execute(
        f"UPDATE usage_events SET cost_micro_usd = 0 WHERE cost_micro_usd IS NULL AND {_NO_TOKENS}"
    )
    _rebuild_rollups()
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("limit_micro_usd", sa.BigInteger, nullable=True),
        sa.Column("limit_tokens", sa.BigInteger, nullable=True),
        sa.Column("soft_ratio", sa.Float, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("scope", "subject", "period", name="uq_budgets_scope_subject_period"),
    )


def _rebuild_rollups() -> None:
    strings = [
        ("use_case", 128),
        ("user", 128),
        ("agent", 128),
        ("key_id", 64),
        ("team", 128),
        ("end_user", 128),
        ("error_code", 64),
        ("model", 128),
        ("backend", 32),
        ("deployment", 256),
    ]
    op.create_table(
        "usage_rollups_hourly_new",
        sa.Column("hour", TZ, primary_key=True),
        *(sa.Column(n, sa.String(s), primary_key=True) for n, s in strings),
        sa.Column("on_prem", sa.Boolean, primary_key=True),
        *(sa.Column(n, sa.BigInteger, nullable=False, server_default="0") for n in SUMS),
    )
    old = ", ".join(f'"{k}"' for k in OLD_KEYS)
    sums = ", ".join(SUMS)
    # Past rows: team from the key; the end user as the events' back-fill derives it; the
    # error code is not known for the past (""), and a row that spent no tokens is not unpriced.
    op.execute(
        f"INSERT INTO usage_rollups_hourly_new (hour, {old}, team, end_user, error_code, {sums}) "
        f"SELECT hour, {old}, COALESCE({_KEY_TEAM.format(t='r')}, 'unknown'), "
        'CASE WHEN "user" = \'unknown\' OR "user" = (SELECT k."user" FROM api_keys k '
        "WHERE k.id = r.key_id) THEN 'unknown' ELSE \"user\" END, '', "
        + ", ".join(
            f"CASE WHEN {_NO_TOKENS} THEN 0 ELSE unpriced_requests END"
            if s == "unpriced_requests"
            else s
            for s in SUMS
        )
        + " FROM usage_rollups_hourly r"
    )
    op.drop_table("usage_rollups_hourly")
    op.rename_table("usage_rollups_hourly_new", "usage_rollups_hourly")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE usage_rollups_hourly RENAME CONSTRAINT usage_rollups_hourly_new_pkey "
            "TO usage_rollups_hourly_pkey"
        )


def downgrade() -> None:
    # The rebuilt rollups hold teams, end users and error codes apart that the old key would
    # merge; going back is a restore from backup, not a migration.
    raise NotImplementedError("0006 cannot be downgraded; restore a backup taken before it")
