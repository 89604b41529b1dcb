"""Every SQL query of the dashboards runs on PostgreSQL, on tables the ledger itself wrote."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, text

from cost.usage import TokenUsage
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.grafana.queries import SQL, interpolate, queries, sql_macros, variable_queries
from tests.metering.factories import T0, make_event

START = datetime.fromtimestamp(T0, UTC) - timedelta(hours=1)
END = START + timedelta(days=4)
USE_CASES = ["coding", "rag", "support", "summarize", "batch-eval", "translate"]
ROUTES = [  # backend, model, deployment, on_prem
    ("anthropic", "claude", "anthropic/claude-sonnet-4-5", False),
    ("azure_mistral", "mistral-large", "azure_mistral/mistral-large-3", False),
    ("vllm", "mistral-large", "vllm/mistralai/Mistral-Large-Instruct-2411", True),
    ("openai_compatible", "compat-model", "openai_compatible/some-model", False),
]


def ledger_events(n: int) -> list:
    rng = random.Random(5)
    events = []
    for _ in range(n):
        backend, model, deployment, on_prem = rng.choice(ROUTES)
        events.append(
            make_event(
                rng,
                started_at=T0 + rng.uniform(0, 3 * 86400),
                use_case=rng.choices(USE_CASES, weights=[40, 25, 15, 10, 6, 4])[0],
                user=f"user-{rng.randint(1, 12)}",
                agent=rng.choice(["claude-code", "vibe", "kb-search", "unknown"]),
                session=rng.choice([f"sess-{rng.randint(1, 40)}", "unknown"]),
                backend=backend,
                model=model,
                deployment=deployment,
                on_prem=on_prem,
                usage=TokenUsage(
                    input_tokens=rng.randint(100, 5000),
                    cache_read_tokens=rng.randint(0, 50),
                    output_tokens=rng.randint(10, 800),
                ),
                cost_micro_usd=None if backend == "openai_compatible" else rng.randint(0, 9000),
                ttft_s=rng.uniform(0.05, 0.5),
            )
        )
    return events


@pytest.fixture(scope="module")
def ledger(pg_admin_url: str) -> Iterator[Engine]:
    """A fresh PostgreSQL database (as tests/conftest.py pg_url, for the whole module), migrated
    and filled through the ledger's own writer."""
    name = "tm_" + uuid.uuid4().hex[:12]
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine = create_db_engine(pg_admin_url.rsplit("/", 1)[0] + "/" + name)
    try:
        upgrade_schema(engine)
        assert insert_events(engine, ledger_events(600)) == 600
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def run(engine: Engine, sql: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


def use_case_list(engine: Engine) -> str:
    """What Grafana puts for $use_case with "All" selected: every value, quoted."""
    [(_, _, query)] = variable_queries(SQL)
    rows = run(engine, sql_macros(query, start=START, end=END))
    return ",".join("'" + next(iter(r.values())) + "'" for r in rows)


def prepare(query, engine: Engine) -> str:
    """The query as Grafana sends it with "All" selected: the spend dashboard's Prometheus
    variables as ``.*`` (its regex filters), the ledger dashboard's use case as a quoted list."""
    names = {
        v["name"]
        for v in query.variables
        if v["type"] == "query" and v["datasource"]["type"] == SQL
    }
    values = {"use_case": use_case_list(engine)} if "use_case" in names else {}
    return sql_macros(interpolate(query.text, query.variables, values), start=START, end=END)


def test_the_use_case_variable_lists_the_ledger_use_cases(ledger):
    assert use_case_list(ledger).count(",") == len(USE_CASES) - 1


@pytest.mark.parametrize("query", queries(SQL), ids=str)
def test_every_sql_query_returns_rows(ledger, query):
    rows = run(ledger, prepare(query, ledger))
    assert rows, query.text
    assert any(v is not None for row in rows for v in row.values())


def test_the_80_20_table_marks_the_smallest_set_carrying_80_percent(ledger):
    [query] = [q for q in queries(SQL) if q.panel.startswith("80/20")]
    rows = run(ledger, prepare(query, ledger))
    tokens = [r["tokens"] for r in rows]
    assert tokens == sorted(tokens, reverse=True)
    assert rows[-1]["cumulative share"] == pytest.approx(1.0)
    marked = [r["in the 80 %"] == "yes" for r in rows]
    n = marked.count(True)
    assert marked == [True] * n + [False] * (len(rows) - n)
    assert rows[n - 1]["cumulative share"] >= 0.8
    assert n == 1 or rows[n - 2]["cumulative share"] < 0.8


def test_top_users_add_up_to_the_events(ledger):
    [query] = [q for q in queries(SQL) if q.panel == "Top users"]
    rows = run(ledger, prepare(query, ledger))
    [total] = run(ledger, "SELECT SUM(input_tokens + output_tokens) AS t FROM usage_events")
    assert sum(r["tokens"] for r in rows) == total["t"]  # 12 users: all within the top 20
