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
from tests.grafana.queries import (
    SQL,
    interpolate,
    queries,
    regex_value,
    sql_macros,
    variable_queries,
)
from tests.metering.factories import T0, make_event

START = datetime.fromtimestamp(T0, UTC) - timedelta(hours=1)
END = START + timedelta(days=4)
USE_CASES = ["coding", "rag", "support", "summarize", "batch-eval", "translate"]
TEAMS = ["platform", "research", "unknown"]
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
        key = rng.randint(1, 6)
        events.append(
            make_event(
                rng,
                started_at=T0 + rng.uniform(0, 3 * 86400),
                use_case=rng.choices(USE_CASES, weights=[40, 25, 15, 10, 6, 4])[0],
                user=f"user-{rng.randint(1, 12)}",
                key_id=f"key-{key}",
                team=TEAMS[key % len(TEAMS)],  # a key belongs to one team
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


def variable_values(engine: Engine, name: str) -> list[str]:
    """What the ledger dashboard's SQL variable ``name`` lists in the test range."""
    [query] = [q for _, var, q in variable_queries(SQL) if var["name"] == name][:1]
    rows = run(engine, sql_macros(query, start=START, end=END))
    return [next(iter(r.values())) for r in rows]


def prepare(query, engine: Engine, empty: bool = False) -> str:
    """The query as Grafana sends it with "All" selected: Prometheus variables as ``.*``, the
    ledger's SQL variables as the regex of every value they list (``:regex``), or, ``empty``,
    as a variable with no values in the range (Grafana then puts in nothing)."""
    names = {
        v["name"]
        for v in query.variables
        if v["type"] == "query" and v["datasource"]["type"] == SQL
    }
    values = {n: "" if empty else regex_value(variable_values(engine, n)) for n in names}
    return sql_macros(interpolate(query.text, query.variables, values), start=START, end=END)


def test_the_use_case_variable_lists_the_ledger_use_cases(ledger):
    assert sorted(variable_values(ledger, "use_case")) == sorted(USE_CASES)


def test_the_team_variable_lists_the_ledger_teams(ledger):
    assert sorted(variable_values(ledger, "team")) == sorted(TEAMS)


@pytest.mark.parametrize("query", queries(SQL), ids=str)
def test_every_sql_query_runs_when_a_variable_has_no_values(ledger, query):
    """No `IN ()`: PostgreSQL would reject it; a query with an empty variable answers."""
    run(ledger, prepare(query, ledger, empty=True))


def test_team_totals_equal_the_sum_of_their_keys(ledger):
    [by_team] = [q for q in queries(SQL) if q.panel == "Cost by team (ledger)"]
    [by_key] = [q for q in queries(SQL) if q.panel == "Cost by team and key (ledger)"]
    teams = {r["team"]: (r["tokens"], r["cost"]) for r in run(ledger, prepare(by_team, ledger))}
    summed: dict[str, list] = {}
    for r in run(ledger, prepare(by_key, ledger)):
        acc = summed.setdefault(r["team"], [0, 0])
        acc[0] += r["tokens"]
        acc[1] += r["cost"]
    assert set(teams) == set(TEAMS)
    assert {t: (v[0], pytest.approx(float(v[1]))) for t, v in summed.items()} == {
        t: (v[0], pytest.approx(float(v[1]))) for t, v in teams.items()
    }


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
