"""A migration plan projected: hosted at its real bill, targets sized separately, verdicts."""

from __future__ import annotations

import pytest

from cost.migration import HostedSlice, MigrationTarget, project_plan
from cost.presets import target_scenario
from cost.sizing import TrafficShape, onprem_cost_at
from cost.tco import MonthlyTokens

SHAPE = TrafficShape(3.0, 3.0, 0.75)
B = 1e9


def piece(use_case: str, model: str, tokens: float, usd_per_m: float, list_usd_per_m: float):
    volume = MonthlyTokens(input_tokens=0.75 * tokens, output_tokens=0.25 * tokens)
    return HostedSlice(
        use_case, model, volume, tokens * usd_per_m / 1e6, tokens * list_usd_per_m / 1e6
    )


def target(name: str, gpu: str, model: str, **filters: tuple[str, ...]) -> MigrationTarget:
    scenario = target_scenario(gpu=gpu, model=model)
    return MigrationTarget(name, scenario.plan, scenario.provenance, **filters)


CODING = target("coding", "h200-node", "devstral-2", models=("claude-sonnet",))
RAG = target("rag", "h200-node", "mistral-small", use_cases=("rag",))
SLICES = (
    # Claude coding: $6/M list, $4.8/M billed after a 20 % negotiated discount
    piece("coding", "claude-sonnet", 10 * B, 4.8, 6.0),
    piece("rag", "azure-mistral", 2 * B, 0.75, 0.75),
    piece("long-tail", "azure-mistral", 0.05 * B, 0.75, 0.75),
)


def test_each_slice_moves_to_the_first_target_that_takes_it_and_the_rest_stays():
    plan = project_plan(SLICES, (CODING, RAG), shape=SHAPE)
    coding, rag = plan.targets
    assert [s.use_case for s in coding.slices] == ["coding"]
    assert [s.use_case for s in rag.slices] == ["rag"]
    assert [s.use_case for s in plan.staying] == ["long-tail"]
    assert plan.hosted_usd_per_month == pytest.approx(48_000 + 1_500 + 37.5)
    assert plan.hosted_list_usd_per_month == pytest.approx(60_000 + 1_500 + 37.5)


def test_targets_are_sized_separately_for_their_own_traffic():
    plan = project_plan(SLICES, (CODING, RAG), shape=SHAPE)
    coding, rag = plan.targets
    alone = onprem_cost_at(CODING.plan, SHAPE, 10 * B)
    assert coding.sized.onprem.gpu_count == alone.onprem.gpu_count
    assert coding.onprem_usd_per_month == pytest.approx(alone.onprem.total_usd_per_month)
    assert rag.sized.sizing.gpus_per_replica == 1 and coding.sized.sizing.gpus_per_replica == 2


def test_hosted_models_carry_billed_and_list_price_per_million():
    plan = project_plan(SLICES, (CODING, RAG), shape=SHAPE)
    prices = {m.model: (m.bill_usd_per_m, m.list_usd_per_m) for m in plan.hosted_models}
    assert prices["claude-sonnet"] == pytest.approx((4.8, 6.0))
    assert prices["azure-mistral"] == pytest.approx((0.75, 0.75))


def test_the_verdict_names_who_pays_off_and_what_stays_hosted():
    plan = project_plan(SLICES, (CODING, RAG), shape=SHAPE)
    coding, rag = plan.targets
    assert coding.pays_off and not rag.pays_off
    assert plan.verdict == (
        f"On-prem pays off in month {coding.break_even.month} for coding (saving "
        f"${coding.savings_usd_per_month:,.0f}/month); hosted stays cheaper for rag and the "
        "traffic that does not move."
    )


def test_no_lever_when_hosted_is_already_cheaper():
    plan = project_plan(SLICES, (CODING, RAG), shape=SHAPE)
    coding, rag = plan.targets
    assert coding.negotiation.lever and 0 < coding.negotiation.discount_needed < 1
    assert coding.negotiation.target_usd_per_m == pytest.approx(coding.sized.usd_per_m)
    assert not rag.negotiation.lever and rag.negotiation.discount_needed <= 0


def test_the_ranking_lists_only_positive_savings():
    slices = (*SLICES, piece("coding-small", "claude-sonnet", 0.01 * B, 4.8, 6.0))
    plan = project_plan(slices, (CODING, RAG), shape=SHAPE)
    coding, rag = plan.targets
    assert [m.use_case for m in coding.use_cases] == ["coding"]  # the small one alone loses
    assert all(m.savings_usd_per_month > 0 for m in coding.use_cases)
    assert rag.use_cases == ()


def test_when_nothing_pays_off_the_verdict_says_hosted_stays_and_no_lever():
    cheap = (piece("rag", "azure-mistral", 2 * B, 0.15, 0.15),)
    plan = project_plan(cheap, (RAG,), shape=SHAPE)
    [rag] = plan.targets
    assert plan.verdict == (
        f"Hosted stays cheaper: rag costs ${rag.onprem_usd_per_month:,.0f}/month on-prem against "
        "$300/month hosted; no lever on price."
    )


def test_growth_that_needs_new_nodes_pays_their_capex_before_the_savings():
    """Solved month by month: at 10 %/month the coding target buys a node every few months,
    each paid up front, so cash break-even comes later than at constant volume."""
    flat = project_plan(SLICES, (CODING,), shape=SHAPE).targets[0].break_even
    growing = project_plan(SLICES, (CODING,), shape=SHAPE, growth_per_month=0.1)
    [coding] = growing.targets
    assert coding.break_even.growth_per_month == 0.1
    assert flat.month == 18 and coding.break_even.month == 32
