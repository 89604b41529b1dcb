"""The demo's synthetic organisation: reproducible, a month of working days, a long tail."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from metering.export.month import Month
from metering.export.pareto import smallest_set
from proxy.demo.org import USE_CASES, plan_month, seats

MONTH = Month(2026, 10)


def plan(seed: int, requests: int = 3000):
    return plan_month(
        seed=seed, seat_count=200, start=MONTH.start, end=MONTH.end, requests=requests
    )


def test_the_same_seed_gives_the_same_month():
    assert plan(5) == plan(5)
    assert plan(5) != plan(6)


def test_requests_fall_on_working_days_of_the_month_in_order():
    requests = plan(1)
    days = {datetime.fromtimestamp(r.at, UTC) for r in requests}
    assert all(MONTH.start <= d < MONTH.end and d.weekday() < 5 for d in days)
    assert [r.at for r in requests] == sorted(r.at for r in requests)
    assert len(requests) == 3000


def test_a_few_use_cases_carry_most_of_the_volume():
    tokens = Counter()
    for r in plan(2):
        tokens[r.use_case.name] += r.prompt_words + r.cache_read + r.output_words
    pareto = smallest_set(tokens.items())
    assert len(tokens) >= 20
    assert 0.1 <= pareto.member_share <= 0.35
    assert {"coding", "rag-knowledge-base"} <= set(pareto.members)


def test_seats_have_the_requested_count():
    assert len(seats(200)) == 200
    assert len({user for user, _ in seats(200)}) == 200


def test_every_use_case_names_a_default_model():
    models = {"claude-sonnet", "claude-haiku", "mistral-large", "mistral-small", "e5-mistral"}
    assert {u.model for u in USE_CASES.values()} <= models
