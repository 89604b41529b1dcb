"""The live projection's window: trailing, p95 of 5-minute peaks, "not enough traffic yet", and
the TCO gauges it publishes (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, select

from cost.migration import MigrationTarget
from cost.scenarios import get_scenario
from cost.usage import TokenUsage
from metering.live_tco import LiveProjection, ProjectionStatus, TcoInputs, project_live, read_window
from metering.metrics import StateMetrics
from metering.price_map import load_price_map
from metering.store import create_db_engine, upgrade_schema
from metering.tables import MINUTES
from metering.tco_window import PEAK_BUCKET_S, _p95, traffic_peaks
from metering.writer import insert_events
from tests.metering.factories import make_event

NOW = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
DEPLOYMENT = "azure_mistral/mistral-large-3"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def add(engine: Engine, minutes_ago: list[float], *, tokens: int = 1_000, cost: int = 1_000):
    """One hosted request per entry, ``minutes_ago`` before NOW, 75/25 input/output."""
    events = [
        make_event(
            started_at=(NOW - timedelta(minutes=m)).timestamp(),
            use_case="coding",
            model="azure-mistral",
            backend="azure_mistral",
            deployment=DEPLOYMENT,
            on_prem=False,
            usage=TokenUsage(input_tokens=tokens * 3 // 4, output_tokens=tokens // 4),
            cost_micro_usd=cost,
        )
        for m in minutes_ago
    ]
    insert_events(engine, events)


def inputs(**fields) -> TcoInputs:
    scenario = get_scenario("enterprise-hgx-colo")
    table = load_price_map()
    price = table.lookup("mistral-large-3", "azure_mistral")
    return TcoInputs(
        plan=scenario.plan,
        targets=(MigrationTarget("all", scenario.plan, scenario.provenance),),
        scenario="enterprise-hgx-colo",
        list_prices={DEPLOYMENT: price},
        price_source=table.source,
        **fields,
    )


def test_the_window_is_trailing(engine):
    add(engine, [10 * 24 * 60, 9 * 24 * 60])  # older than 7 days
    add(engine, [90, 60, 30])
    window = read_window(engine, now=NOW, window_days=7)
    assert window is not None and window.requests == 3
    assert window.start == NOW - timedelta(minutes=90)


def test_peak_is_the_p95_of_5_minute_windows_not_the_busiest_minute(engine):
    # Two hours, one request a minute; one 5-minute window has a 100x burst.
    add(engine, [m + 0.5 for m in range(120)])
    add(engine, [7.5], tokens=100_000)
    window = read_window(engine, now=NOW, window_days=7)
    assert window is not None
    # 24 five-minute windows: the p95 (nearest rank 23 of 24) is a steady one, 5 x 750 input
    # tokens; the burst alone does not size the hardware.
    assert window.peaks.input_tokens_per_s == pytest.approx(5 * 750 / 300, rel=0.25)
    mean = (120 * 750 + 75_000) / window.seconds
    assert window.peaks.mean_input_tokens_per_s == pytest.approx(mean)
    add(engine, [33.5, 61.5], tokens=100_000)  # two more bursts: now the top 5 % is bursty
    bursty = read_window(engine, now=NOW, window_days=7)
    assert bursty is not None and bursty.peaks.input_tokens_per_s > 75_000 / 300


@pytest.mark.parametrize(
    ("minutes", "requests", "seen"),
    [(30, 30, "30 requests over 29 min"), (120, 120, "120 requests over 2.0 h")],
)
def test_not_enough_traffic_says_what_it_saw(engine, minutes, requests, seen):
    add(engine, [float(m) for m in range(minutes)])
    result = project_live(engine, inputs(), window_days=7, now=NOW)
    assert result.status is ProjectionStatus.NOT_ENOUGH_TRAFFIC and result.projection is None
    assert result.verdict == (
        f"not enough traffic yet: {seen} seen; a projection needs at least 1.0 h and 1,000 requests"
    )


def test_enough_traffic_projects_the_metered_bill(engine):
    add(engine, [m / 10 for m in range(1_200)], cost=2_000)  # 1,200 requests over 2 hours
    result = project_live(engine, inputs(), window_days=7, now=NOW)
    assert result.status is ProjectionStatus.OK and result.projection is not None
    scale = result.window.extrapolation_factor if result.window else 0
    assert result.projection.hosted_usd_per_month == pytest.approx(1_200 * 2_000 / 1e6 * scale)
    body = result.to_json()
    assert body["price_map"].startswith("litellm ")
    assert body["inputs"]["targets"][0]["provenance"]["capex_usd_per_node"]["kind"] == "list"
    assert body["window"]["peak_basis"] == "p95 of 5-minute windows"


def tco_series(state: StateMetrics, registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith("tokenmeter_tco_")]


def test_no_tco_series_before_the_first_projection():
    registry = CollectorRegistry()
    state = StateMetrics(registry)
    state.set_tco(None)
    assert tco_series(state, registry) == []


def test_not_enough_traffic_publishes_the_status_and_no_numbers(engine):
    add(engine, [1.0, 2.0])
    registry = CollectorRegistry()
    state = StateMetrics(registry)
    state.set_tco(project_live(engine, inputs(), window_days=7, now=NOW))
    names = {line.split("{")[0] for line in tco_series(state, registry)}
    assert names == {"tokenmeter_tco_status", "tokenmeter_tco_verdict_info"}


def test_never_is_minus_one_and_no_lever_is_minus_one(engine):
    add(engine, [m / 10 for m in range(1_200)])  # a tiny bill: on-prem never pays off
    registry = CollectorRegistry()
    state = StateMetrics(registry)
    result: LiveProjection = project_live(engine, inputs(), window_days=7, now=NOW)
    state.set_tco(result)
    lines = tco_series(state, registry)
    assert 'tokenmeter_tco_break_even_months{target="all"} -1.0' in lines
    assert 'tokenmeter_tco_negotiation_target_usd_per_mtok{target="all"} -1.0' in lines
    gpus = [line for line in lines if line.startswith("tokenmeter_tco_gpus_needed")]
    assert gpus == ['tokenmeter_tco_gpus_needed{target="all"} 8.0']  # 2 replicas x TP4 (HA)


def test_list_price_of_a_window_is_the_base_tier_not_one_long_request():
    """A window's 1M input tokens are many requests: a model listed at $3/M with a $6/M
    long-context tier (per request above 200k input tokens, as Sonnet 4.5's) lists them at $3/M."""
    from decimal import Decimal

    from cost.prices import ModelPrice
    from metering.live_tco import RollupRow, hosted_slices, window_from_rollups
    from metering.tco_window import Peaks

    base, tier = Decimal("0.000003"), Decimal("0.000006")
    price = ModelPrice("tiered", base, base * 5, base, base, base, input_above_200k=tier)
    row = RollupRow(
        "coding", False, TokenUsage(input_tokens=1_000_000), 500, 1, "claude", "anthropic/x"
    )
    window = window_from_rollups([row], start=NOW - timedelta(hours=2), end=NOW, peaks=Peaks())
    claude = replace(inputs(), list_prices={"anthropic/x": price})
    [piece] = hosted_slices(window, claude)
    assert piece.list_usd_per_month == pytest.approx(3.0 * window.extrapolation_factor)


@pytest.mark.parametrize("offset_s", [0.0, 17.25, 299.999999])
def test_peaks_cut_in_sql_equal_the_minute_by_minute_reckoning(engine, offset_s):
    rng = random.Random(int(offset_s) + 1)
    base = 1_790_000_000.0 - (1_790_000_000.0 % 3600)
    insert_events(
        engine, [make_event(rng, started_at=base + rng.uniform(0, 3 * 3600)) for _ in range(400)]
    )
    start = datetime.fromtimestamp(base + 600 + offset_s, UTC)
    end = start + timedelta(hours=2)
    with engine.connect() as conn:
        got = traffic_peaks(conn, start=start, end=end)
        m = MINUTES.c
        rows = conn.execute(
            select(m.minute, m.input_tokens, m.output_tokens).where(
                m.minute >= start.replace(second=0, microsecond=0), m.minute < end
            )
        ).all()
    buckets = math.ceil((end - start).total_seconds() / PEAK_BUCKET_S)
    sums: dict[int, list[int]] = {}
    for minute, inp, out in rows:  # each minute into its 5 minutes, as before they were cut in SQL
        at = minute if minute.tzinfo else minute.replace(tzinfo=UTC)
        index = int((at - start).total_seconds() // PEAK_BUCKET_S)
        acc = sums.setdefault(max(0, min(index, buckets - 1)), [0, 0])
        acc[0], acc[1] = acc[0] + inp, acc[1] + out
    assert len(sums) > 10
    assert got.input_tokens_per_s == _p95([v[0] for v in sums.values()], buckets) / PEAK_BUCKET_S
    assert got.output_tokens_per_s == _p95([v[1] for v in sums.values()], buckets) / PEAK_BUCKET_S
