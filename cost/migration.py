"""A migration plan, projected: which hosted traffic moves to which on-prem model, at what cost.

Hosted today is the metered bill (every pricing rule applied), per hosted model and use case,
also shown at list (tco.md §2.2). Each migration target takes the hosted traffic its filters
match and is sized separately for it (``cost.sizing``); what no target takes stays hosted at
its real price. Volumes are tokens per month, money USD per month, prices $ per M tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cost.capacity import OnPremPlan
from cost.scenarios import Provenance
from cost.sizing import (
    MonthlyBreakEven,
    SizedCost,
    SizedCrossover,
    TrafficShape,
    break_even_by_month,
    onprem_cost_at,
    sized_crossover,
)
from cost.tco import MonthlyTokens


@dataclass(frozen=True, slots=True)
class HostedSlice:
    """Hosted traffic of one (use case, hosted model) per month: tokens, the metered bill and
    the same tokens at the model's list price."""

    use_case: str
    model: str
    tokens: MonthlyTokens
    bill_usd_per_month: float
    list_usd_per_month: float


@dataclass(frozen=True, slots=True)
class HostedModelPrice:
    """One hosted model's effective price over the window: bill and list per M tokens."""

    model: str
    tokens_per_month: float
    bill_usd_per_month: float
    list_usd_per_month: float

    @property
    def bill_usd_per_m(self) -> float | None:
        return _per_m(self.bill_usd_per_month, self.tokens_per_month)

    @property
    def list_usd_per_m(self) -> float | None:
        return _per_m(self.list_usd_per_month, self.tokens_per_month)


def _per_m(usd: float, tokens: float) -> float | None:
    return usd / tokens * 1e6 if tokens else None


@dataclass(frozen=True, slots=True)
class MigrationTarget:
    """Where matching hosted traffic would move: an open model on GPUs, with provenance.

    ``models`` / ``use_cases`` filter the hosted traffic (empty: any); a slice goes to the
    first target that matches it.
    """

    name: str
    plan: OnPremPlan
    provenance: Mapping[str, Provenance]
    models: tuple[str, ...] = ()
    use_cases: tuple[str, ...] = ()

    def takes(self, piece: HostedSlice) -> bool:
        return (not self.models or piece.model in self.models) and (
            not self.use_cases or piece.use_case in self.use_cases
        )


@dataclass(frozen=True, slots=True)
class UseCaseMove:
    """Moving one use case of a target alone: its bill against its own sized on-prem cost."""

    use_case: str
    tokens_per_month: float
    hosted_usd_per_month: float
    onprem_usd_per_month: float

    @property
    def savings_usd_per_month(self) -> float:
        return self.hosted_usd_per_month - self.onprem_usd_per_month


@dataclass(frozen=True, slots=True)
class Negotiation:
    """The hosted price at which the moving traffic's bill equals its sized on-prem cost (§2.7).

    ``lever`` is True when on-prem is cheaper than today's bill: the target is what to ask the
    vendor for. False: hosted is already cheaper, there is no lever.
    """

    target_usd_per_m: float
    bill_usd_per_m: float
    list_usd_per_m: float

    @property
    def lever(self) -> bool:
        return self.target_usd_per_m < self.bill_usd_per_m

    @property
    def discount_needed(self) -> float:
        """Off today's bill per token to match on-prem; ≤ 0 when there is no lever."""
        return 1 - self.target_usd_per_m / self.bill_usd_per_m

    @property
    def discount_needed_vs_list(self) -> float:
        return 1 - self.target_usd_per_m / self.list_usd_per_m if self.list_usd_per_m else 0.0


@dataclass(frozen=True, slots=True)
class TargetProjection:
    """One target with the hosted traffic it takes, sized for that traffic alone."""

    target: MigrationTarget
    slices: tuple[HostedSlice, ...]
    sized: SizedCost
    break_even: MonthlyBreakEven
    break_even_without_staff: MonthlyBreakEven
    crossover: SizedCrossover
    negotiation: Negotiation
    use_cases: tuple[UseCaseMove, ...]

    @property
    def tokens_per_month(self) -> float:
        return sum(s.tokens.total_tokens for s in self.slices)

    @property
    def hosted_usd_per_month(self) -> float:
        return sum(s.bill_usd_per_month for s in self.slices)

    @property
    def hosted_list_usd_per_month(self) -> float:
        return sum(s.list_usd_per_month for s in self.slices)

    @property
    def onprem_usd_per_month(self) -> float:
        return self.sized.onprem.total_usd_per_month

    @property
    def savings_usd_per_month(self) -> float:
        return self.hosted_usd_per_month - self.onprem_usd_per_month

    @property
    def pays_off(self) -> bool:
        return self.break_even.month is not None


@dataclass(frozen=True, slots=True)
class PlanProjection:
    """Every target, what stays hosted, and the verdict in one sentence."""

    targets: tuple[TargetProjection, ...]
    staying: tuple[HostedSlice, ...]
    hosted_models: tuple[HostedModelPrice, ...]
    growth_per_month: float
    shape: TrafficShape
    warnings: tuple[str, ...] = field(default=())

    @property
    def hosted_usd_per_month(self) -> float:
        """Today's whole hosted bill, extrapolated to a month."""
        return sum(m.bill_usd_per_month for m in self.hosted_models)

    @property
    def hosted_list_usd_per_month(self) -> float:
        return sum(m.list_usd_per_month for m in self.hosted_models)

    @property
    def staying_usd_per_month(self) -> float:
        return sum(s.bill_usd_per_month for s in self.staying)

    @property
    def verdict(self) -> str:
        return plan_verdict(self)


def project_plan(
    slices: tuple[HostedSlice, ...],
    targets: tuple[MigrationTarget, ...],
    *,
    shape: TrafficShape,
    growth_per_month: float = 0.0,
    warnings: tuple[str, ...] = (),
) -> PlanProjection:
    """Assign each hosted slice to the first target that takes it and project each target."""
    taken: dict[str, list[HostedSlice]] = {t.name: [] for t in targets}
    staying: list[HostedSlice] = []
    for piece in slices:
        target = next((t for t in targets if t.takes(piece)), None)
        (staying if target is None else taken[target.name]).append(piece)
    projected = tuple(
        _project_target(t, tuple(taken[t.name]), shape, growth_per_month)
        for t in targets
        if _tokens(taken[t.name]) > 0
    )
    return PlanProjection(
        targets=projected,
        staying=tuple(staying),
        hosted_models=_by_model(slices),
        growth_per_month=growth_per_month,
        shape=shape,
        warnings=warnings,
    )


def _tokens(slices: list[HostedSlice] | tuple[HostedSlice, ...]) -> float:
    return sum(s.tokens.total_tokens for s in slices)


def _by_model(slices: tuple[HostedSlice, ...]) -> tuple[HostedModelPrice, ...]:
    sums: dict[str, list[float]] = {}
    for s in slices:
        acc = sums.setdefault(s.model, [0.0, 0.0, 0.0])
        acc[0] += s.tokens.total_tokens
        acc[1] += s.bill_usd_per_month
        acc[2] += s.list_usd_per_month
    return tuple(HostedModelPrice(m, *v) for m, v in sorted(sums.items()))


def _project_target(
    target: MigrationTarget,
    slices: tuple[HostedSlice, ...],
    shape: TrafficShape,
    growth: float,
) -> TargetProjection:
    plan = target.plan
    volume = _tokens(slices)
    bill = sum(s.bill_usd_per_month for s in slices)
    at_list = sum(s.list_usd_per_month for s in slices)
    mix = _shape_for(slices, shape)
    sized = onprem_cost_at(plan, mix, volume)
    per_token = bill / volume

    def cash(without_staff: bool) -> MonthlyBreakEven:
        return break_even_by_month(
            plan,
            mix,
            tokens_per_month=volume,
            hosted_usd_per_token=per_token,
            growth_per_month=growth,
            without_staff=without_staff,
        )

    return TargetProjection(
        target=target,
        slices=slices,
        sized=sized,
        break_even=cash(False),
        break_even_without_staff=cash(True),
        crossover=sized_crossover(plan, mix, per_token * 1e6),
        negotiation=Negotiation(
            target_usd_per_m=sized.usd_per_m,
            bill_usd_per_m=per_token * 1e6,
            list_usd_per_m=at_list / volume * 1e6,
        ),
        use_cases=_rank(plan, slices, shape),
    )


def _shape_for(slices: tuple[HostedSlice, ...], shape: TrafficShape) -> TrafficShape:
    """The observed κ with the mix of these slices."""
    total = sum(s.tokens.total_tokens for s in slices)
    inputs = sum(s.tokens.all_input_tokens for s in slices)
    return TrafficShape(shape.peak_to_average_input, shape.peak_to_average_output, inputs / total)


def _rank(
    plan: OnPremPlan, slices: tuple[HostedSlice, ...], shape: TrafficShape
) -> tuple[UseCaseMove, ...]:
    """Use cases whose move alone saves money, largest saving first; none when none does."""
    by_use_case: dict[str, list[HostedSlice]] = {}
    for s in slices:
        by_use_case.setdefault(s.use_case, []).append(s)
    moves = []
    for use_case, own in by_use_case.items():
        volume = _tokens(own)
        if volume == 0:
            continue
        onprem = onprem_cost_at(plan, _shape_for(tuple(own), shape), volume)
        move = UseCaseMove(
            use_case=use_case,
            tokens_per_month=volume,
            hosted_usd_per_month=sum(s.bill_usd_per_month for s in own),
            onprem_usd_per_month=onprem.onprem.total_usd_per_month,
        )
        if move.savings_usd_per_month > 0:
            moves.append(move)
    return tuple(sorted(moves, key=lambda m: (-m.savings_usd_per_month, m.use_case)))


def plan_verdict(plan: PlanProjection) -> str:
    """One sentence a finance or infra person can act on."""
    paying = [t for t in plan.targets if t.pays_off]
    staying = [t for t in plan.targets if not t.pays_off]
    if not plan.targets:
        return "Hosted stays: no hosted traffic matches the migration plan."
    if not paying:
        best = min(plan.targets, key=lambda t: t.onprem_usd_per_month - t.hosted_usd_per_month)
        costs = (
            f"costs {_usd(best.onprem_usd_per_month)}/month on-prem against "
            f"{_usd(best.hosted_usd_per_month)}/month hosted; no lever on price."
        )
        if len(plan.targets) == 1:
            return f"Hosted stays cheaper: {best.target.name} {costs}"
        nearest = f"the nearest, {best.target.name},"
        return f"Hosted stays cheaper for {_names(plan.targets)}: {nearest} {costs}"
    month = min(t.break_even.month or 0 for t in paying)
    tail = [t.target.name for t in staying]
    rest = " and the traffic that does not move" if plan.staying else ""
    stays = (
        f"; hosted stays cheaper for {_join(tail)}{rest}"
        if tail
        else (f"; the rest stays hosted ({_usd(plan.staying_usd_per_month)}/month)" if rest else "")
    )
    saving = sum(t.savings_usd_per_month for t in paying)
    return (
        f"On-prem pays off in month {month} for {_names(paying)} "
        f"(saving {_usd(saving)}/month){stays}."
    )


def _names(targets: list[TargetProjection] | tuple[TargetProjection, ...]) -> str:
    return _join([t.target.name for t in targets])


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _usd(value: float) -> str:
    return f"${value:,.0f}"
