"""On-prem capacity: the plan, the GPUs the observed peak needs, what they cost, where they pay off.

Formulas are tco.md §2.3 (monthly cost by component), §2.4 (sizing and capacity) and §2.6 (the
crossover volume: a step function over deployments, against a hosted price per token). Energy is
costed at the draw of a given utilization u, ``P_max · (0.3 + 0.7·u)``; the TCO projection uses
u = 1 (maximum draw 24/7), as tco.md's worked tables do: it overstates energy by at most 0.7 ·
E_max, on a line that is small next to amortization and staff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

TOKENS_PER_M = 1_000_000  # prices are $ per million tokens
SECONDS_PER_MONTH = 2_628_000  # 730 h × 3,600 s, 24/7 (tco.md conventions)
HOURS_PER_MONTH = 730  # tco.md conventions
IDLE_POWER_FRACTION = 0.3  # P = P_max · (0.3 + 0.7·u), a tool default [kv-planner] (tco.md §2.3)
DEFAULT_PUE = 1.58  # industry average, Uptime Institute survey 2023 [uptime-pue] (tco.md §5)
DEFAULT_USD_PER_KWH = 0.12  # US commercial mid-range, est. from EIA 2023 [eia] (tco.md §5)
DEFAULT_STAFF_FTE_FRACTION = 0.2  # seed: "20 % of one engineer's time" (tco.md §3)
DEFAULT_STAFF_LOADED_USD_PER_YEAR = 300_000.0  # seed: $50–70k at 20 % ⇒ $250–350k (tco.md §3)
DEFAULT_VRAM_HEADROOM = 2.0  # seed: "plan for 2x headroom in VRAM" (tco.md §3)
DEFAULT_TARGET_UTILIZATION = 0.7  # assumption; TTFT stays low below saturation [cost-meter] (§3)
DEFAULT_MIN_REPLICAS = 2  # assumption: production HA; 1 for a pilot (tco.md §3)
DEFAULT_TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)  # tco.md §3
DEFAULT_MAX_NODES = 32  # assumption: how far the crossover step function looks (tco.md §2.6 n_max)


class CapacityBasis(StrEnum):
    """How GPU time per token is counted (tco.md §2.4).

    ``harmonic``: s_in / R_pre + s_out / R_dec (conservative: the decode rates were measured on
    workloads that include prefill). ``output_only``: s_out / R_dec, prefill taken as free.
    """

    HARMONIC = "harmonic"
    OUTPUT_ONLY = "output_only"


class BindingConstraint(StrEnum):
    """What sets the GPU count (tco.md §2.4).

    tco.md's "throughput" is ``prefill`` or ``decode``, whichever term of the peak GPU-seconds
    is larger; "HA" is ``min_replicas``; "memory" is one replica whose size (its tensor-parallel
    width) is set by model memory × VRAM headroom.
    """

    PREFILL = "prefill"
    DECODE = "decode"
    MEMORY = "memory"
    MIN_REPLICAS = "min_replicas"


@dataclass(frozen=True, slots=True)
class OnPremPlan:
    """The on-prem option: hardware, what it costs, and how fast it serves one model.

    Capex is ``gpus · capex_usd_per_gpu + nodes · capex_usd_per_node``, paid up front and
    amortized over ``amortization_months`` (straight line, or an annuity when
    ``interest_rate_per_year`` > 0). ``power_kw_per_gpu`` is all-in (server overhead included).
    ``energy_usd_per_gpu_month``, when set, replaces the computed energy (small rigs: the seed's
    $15–25/month). ``colo_usd_per_kw_month`` is 0 in an own data centre; in colo set ``pue`` to
    1.0 when cooling is in the colo rate. Staff is a fixed share of an engineer, whatever the
    node count. ``gpu_count`` fixes the deployment (the seed's 4 GPUs); None sizes it from the
    observed peak. ``whole_nodes`` buys whole nodes (an 8-GPU HGX), so GPUs come in nodes.
    ``rent_usd_per_gpu_hour`` rents the GPUs by the hour instead (24/7, 730 h/month): set capex,
    energy and colo to 0 when the rate includes them, as cloud rates do.
    Throughput rates are per GPU at saturation: prefill (input) and decode (output) tokens/s.
    """

    gpu_name: str
    capex_usd_per_gpu: float
    amortization_months: float
    horizon_months: int
    power_kw_per_gpu: float
    prefill_tokens_per_s_per_gpu: float
    decode_tokens_per_s_per_gpu: float
    vram_gb_per_gpu: float
    model_memory_gb: float
    capex_usd_per_node: float = 0.0
    gpus_per_node: int = 8
    gpu_count: int | None = None
    whole_nodes: bool = False
    max_nodes: int = DEFAULT_MAX_NODES
    residual_fraction: float = 0.0
    interest_rate_per_year: float = 0.0
    pue: float = DEFAULT_PUE
    usd_per_kwh: float = DEFAULT_USD_PER_KWH
    energy_usd_per_gpu_month: float | None = None
    colo_usd_per_kw_month: float = 0.0
    facility_usd_per_month: float = 0.0
    staff_fte_fraction: float = DEFAULT_STAFF_FTE_FRACTION
    staff_loaded_usd_per_year: float = DEFAULT_STAFF_LOADED_USD_PER_YEAR
    software_usd_per_month: float = 0.0
    support_rate_per_year: float = 0.0
    vram_headroom: float = DEFAULT_VRAM_HEADROOM
    tensor_parallel_sizes: tuple[int, ...] = DEFAULT_TENSOR_PARALLEL_SIZES
    min_replicas: int = DEFAULT_MIN_REPLICAS
    target_utilization: float = DEFAULT_TARGET_UTILIZATION
    capacity_basis: CapacityBasis = CapacityBasis.HARMONIC
    rent_usd_per_gpu_hour: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, _POSITIVE_FIELDS, positive=True)
        check_fields(self, _NON_NEGATIVE_FIELDS)
        check_fields(self, ("residual_fraction",), maximum=1.0)
        check_fields(self, ("target_utilization",), positive=True, maximum=1.0)
        check_fields(self, ("pue",), minimum=1.0)
        for name in ("horizon_months", "gpus_per_node", "max_nodes", "min_replicas"):
            check_count(f"OnPremPlan.{name}", getattr(self, name))
        if self.energy_usd_per_gpu_month is not None:
            check_fields(self, ("energy_usd_per_gpu_month",))
        if self.gpu_count is not None:
            check_count("OnPremPlan.gpu_count", self.gpu_count)
        if not self.tensor_parallel_sizes:
            raise ValueError("OnPremPlan.tensor_parallel_sizes must not be empty")
        for size in self.tensor_parallel_sizes:
            check_count("OnPremPlan.tensor_parallel_sizes", size, maximum=self.gpus_per_node)
        if not isinstance(self.capacity_basis, CapacityBasis):
            raise ValueError(
                f"OnPremPlan.capacity_basis must be a CapacityBasis, got {self.capacity_basis!r}"
            )
        gpus_per_replica(self)  # the model must fit the widest replica
        if self.gpu_count is not None and self.gpu_count < gpus_per_replica(self):
            raise ValueError(
                f"OnPremPlan.gpu_count {self.gpu_count} cannot hold one replica of "
                f"{gpus_per_replica(self)} GPUs"
            )


# fmt: off
_POSITIVE_FIELDS = (
    "amortization_months", "power_kw_per_gpu", "prefill_tokens_per_s_per_gpu",
    "decode_tokens_per_s_per_gpu", "vram_gb_per_gpu", "model_memory_gb", "vram_headroom",
)
_NON_NEGATIVE_FIELDS = (
    "capex_usd_per_gpu", "capex_usd_per_node", "interest_rate_per_year", "usd_per_kwh",
    "colo_usd_per_kw_month", "facility_usd_per_month", "staff_fte_fraction",
    "staff_loaded_usd_per_year", "software_usd_per_month", "support_rate_per_year",
    "rent_usd_per_gpu_hour",
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Sizing:
    """GPUs and nodes the observed peak needs (tco.md §2.4), and the constraint that binds.

    ``gpu_seconds_per_s`` is G, the GPU-seconds of work per second at peak, split into its
    prefill and decode parts. ``gpus_needed`` = ``replicas · gpus_per_replica``.
    """

    prefill_gpu_seconds_per_s: float
    decode_gpu_seconds_per_s: float
    gpus_per_replica: int
    replicas_for_throughput: int
    replicas: int
    gpus_needed: int
    nodes_needed: int
    binding: BindingConstraint

    @property
    def gpu_seconds_per_s(self) -> float:
        return self.prefill_gpu_seconds_per_s + self.decode_gpu_seconds_per_s


def size_for_peak(
    plan: OnPremPlan, *, peak_input_tokens_per_s: float, peak_output_tokens_per_s: float
) -> Sizing:
    """Size the deployment for the peak input and output token rates (tokens/s).

    G = Λ_in / R_pre + Λ_out / R_dec (prefill is free under ``output_only``); replicas for
    throughput = ceil(G / U_target / GPUs per replica), at least ``min_replicas``.
    """
    check_number("peak_input_tokens_per_s", peak_input_tokens_per_s)
    check_number("peak_output_tokens_per_s", peak_output_tokens_per_s)
    prefill = peak_input_tokens_per_s / plan.prefill_tokens_per_s_per_gpu
    if plan.capacity_basis is CapacityBasis.OUTPUT_ONLY:
        prefill = 0.0
    decode = peak_output_tokens_per_s / plan.decode_tokens_per_s_per_gpu
    width = gpus_per_replica(plan)
    for_throughput = ceil_whole((prefill + decode) / plan.target_utilization / width)
    replicas = max(for_throughput, plan.min_replicas)
    if for_throughput >= max(plan.min_replicas, 2):
        binding = BindingConstraint.PREFILL if prefill > decode else BindingConstraint.DECODE
    elif plan.min_replicas > for_throughput:
        binding = BindingConstraint.MIN_REPLICAS
    else:
        binding = BindingConstraint.MEMORY
    return Sizing(
        prefill_gpu_seconds_per_s=prefill,
        decode_gpu_seconds_per_s=decode,
        gpus_per_replica=width,
        replicas_for_throughput=for_throughput,
        replicas=replicas,
        gpus_needed=replicas * width,
        nodes_needed=node_count(plan, replicas * width),
        binding=binding,
    )


def gpus_per_replica(plan: OnPremPlan) -> int:
    """Smallest tensor-parallel width whose VRAM holds model memory × headroom."""
    needed_gb = plan.model_memory_gb * plan.vram_headroom
    for width in sorted(plan.tensor_parallel_sizes):
        if width * plan.vram_gb_per_gpu >= needed_gb * (1 - 1e-12):
            return width
    widest = max(plan.tensor_parallel_sizes)
    raise ValueError(
        f"OnPremPlan.model_memory_gb × vram_headroom = {needed_gb:g} GB does not fit the widest "
        f"replica ({widest} × {plan.vram_gb_per_gpu:g} GB): raise vram_gb_per_gpu or "
        "tensor_parallel_sizes, or lower vram_headroom"
    )


def deployed_gpu_count(plan: OnPremPlan, gpus_needed: int) -> int:
    """GPUs actually bought: the plan's fixed count, else the need rounded up to whole nodes."""
    if plan.gpu_count is not None:
        return plan.gpu_count
    if plan.whole_nodes:
        return node_count(plan, gpus_needed) * plan.gpus_per_node
    return gpus_needed


def node_count(plan: OnPremPlan, gpu_count: int) -> int:
    return math.ceil(gpu_count / plan.gpus_per_node)


def gpu_seconds_per_token(plan: OnPremPlan, input_share: float) -> float:
    """GPU-seconds one token of the mix takes: s_in / R_pre + s_out / R_dec (tco.md §2.4)."""
    check_number("input_share", input_share, maximum=1.0)
    decode = (1 - input_share) / plan.decode_tokens_per_s_per_gpu
    if plan.capacity_basis is CapacityBasis.OUTPUT_ONLY:
        return decode
    return input_share / plan.prefill_tokens_per_s_per_gpu + decode


def capacity_tokens_per_month(
    plan: OnPremPlan, *, gpu_count: int, input_share: float, utilization: float = 1.0
) -> float:
    """Cap_U: tokens/month of the mix that ``gpu_count`` GPUs serve at ``utilization``.

    Infinite when the mix takes no GPU time (output-only basis, input-only traffic).
    """
    check_count("gpu_count", gpu_count)
    check_number("utilization", utilization, maximum=1.0)
    seconds = gpu_seconds_per_token(plan, input_share)
    busy_seconds = gpu_count * SECONDS_PER_MONTH * utilization
    return busy_seconds / seconds if seconds > 0 else math.inf


def utilization_for_volume(
    plan: OnPremPlan,
    *,
    gpu_count: int,
    input_tokens_per_month: float,
    output_tokens_per_month: float,
) -> float:
    """u = (T_in / R_pre + T_out / R_dec) / (GPUs · 2,628,000 s), the busy share of GPU time.

    Also the measured utilization of an on-prem leg, from its own token counts.
    """
    total = check_number("input_tokens_per_month", input_tokens_per_month) + check_number(
        "output_tokens_per_month", output_tokens_per_month
    )
    check_count("gpu_count", gpu_count)
    if total == 0:
        return 0.0
    per_token = gpu_seconds_per_token(plan, input_tokens_per_month / total)
    return total * per_token / (gpu_count * SECONDS_PER_MONTH)


@dataclass(frozen=True, slots=True)
class OnPremMonthlyCost:
    """On-prem cost of one month by component, USD (tco.md §2.3: A + E + F + S + W + M).

    ``capex_usd`` is paid up front; ``amortized_capex_usd_per_month`` (A) spreads it. ``opex``
    is the cash running cost, total minus A, which break-even uses.
    """

    gpu_count: int
    node_count: int
    capex_usd: float
    amortized_capex_usd_per_month: float
    energy_usd_per_month: float
    facility_usd_per_month: float
    staff_usd_per_month: float
    software_usd_per_month: float
    support_usd_per_month: float
    rent_usd_per_month: float = 0.0

    @property
    def opex_usd_per_month(self) -> float:
        return (
            self.rent_usd_per_month
            + self.energy_usd_per_month
            + self.facility_usd_per_month
            + self.staff_usd_per_month
            + self.software_usd_per_month
            + self.support_usd_per_month
        )

    @property
    def opex_without_staff_usd_per_month(self) -> float:
        return self.opex_usd_per_month - self.staff_usd_per_month

    @property
    def total_usd_per_month(self) -> float:
        return self.amortized_capex_usd_per_month + self.opex_usd_per_month


def onprem_monthly_cost(
    plan: OnPremPlan, *, gpu_count: int, utilization: float = 1.0
) -> OnPremMonthlyCost:
    """What ``gpu_count`` GPUs of ``plan`` cost a month with energy drawn at ``utilization``."""
    check_count("gpu_count", gpu_count)
    check_number("utilization", utilization, maximum=1.0)
    nodes = node_count(plan, gpu_count)
    capex_usd = gpu_count * plan.capex_usd_per_gpu + nodes * plan.capex_usd_per_node
    power_kw = gpu_count * plan.power_kw_per_gpu
    draw = IDLE_POWER_FRACTION + (1 - IDLE_POWER_FRACTION) * utilization
    energy = power_kw * draw * HOURS_PER_MONTH * plan.usd_per_kwh * plan.pue
    if plan.energy_usd_per_gpu_month is not None:
        energy = gpu_count * plan.energy_usd_per_gpu_month
    return OnPremMonthlyCost(
        gpu_count=gpu_count,
        node_count=nodes,
        capex_usd=capex_usd,
        amortized_capex_usd_per_month=_amortize(plan, capex_usd),
        energy_usd_per_month=energy,
        facility_usd_per_month=power_kw * plan.colo_usd_per_kw_month + plan.facility_usd_per_month,
        staff_usd_per_month=plan.staff_fte_fraction * plan.staff_loaded_usd_per_year / 12,
        software_usd_per_month=plan.software_usd_per_month,
        support_usd_per_month=plan.support_rate_per_year * capex_usd / 12,
        rent_usd_per_month=gpu_count * plan.rent_usd_per_gpu_hour * HOURS_PER_MONTH,
    )


def _amortize(plan: OnPremPlan, capex_usd: float) -> float:
    """Straight line, capex · (1 − residual) / months; with interest, the annuity CRF(r, n) / 12.

    The annuity discounts the residual value to today, so r → 0 gives the straight line.
    """
    rate, residual_usd = plan.interest_rate_per_year, capex_usd * plan.residual_fraction
    if rate == 0:
        return (capex_usd - residual_usd) / plan.amortization_months
    years = plan.amortization_months / 12
    growth = math.pow(1 + rate, years)
    capital_recovery = rate * growth / (growth - 1)
    return (capex_usd - residual_usd / growth) * capital_recovery / 12


class CrossoverStatus(StrEnum):
    """Whether on-prem ever gets cheaper than hosted as volume grows (tco.md §2.6).

    ``never_price``: the hosted price per token does not even cover on-prem's variable
    (energy) cost per token. ``never_capacity``: no deployment up to ``max_nodes`` carries its
    own crossover volume at target utilization.
    """

    FEASIBLE = "feasible"
    NEVER_PRICE = "never_price"
    NEVER_CAPACITY = "never_capacity"


@dataclass(frozen=True, slots=True)
class CrossoverStep:
    """One deployment on the crossover search; volumes in tokens/month of the observed mix.

    ``simple_tokens_per_month`` = C_onprem(u = 1) / p_blend. ``exact_tokens_per_month`` =
    (C − 0.7·E_max) / (p_blend − c_var), where c_var = 0.7·E_max / Cap_1 is the energy that
    grows with load; infinite when the price does not cover c_var. Energy entered directly
    (``energy_usd_per_gpu_month``) is fixed, so both forms agree.
    """

    onprem: OnPremMonthlyCost
    simple_tokens_per_month: float
    exact_tokens_per_month: float
    capacity_at_target_tokens_per_month: float

    @property
    def feasible(self) -> bool:
        """The simple (conservative) crossover volume fits at target utilization."""
        return self.simple_tokens_per_month <= self.capacity_at_target_tokens_per_month


@dataclass(frozen=True, slots=True)
class Crossover:
    """Monthly volume at which hosted and on-prem cost the same, as a step function of nodes.

    The search starts at the smallest deployment (the plan's fixed ``gpu_count``, else
    ``min_replicas`` replicas) and adds a node (``whole_nodes``) or a replica until the simple
    crossover volume fits at target utilization, up to ``max_nodes``. ``first`` is the smallest
    deployment, feasible or not (tco.md §7 T7 tabulates it); ``chosen`` the first feasible one.
    """

    status: CrossoverStatus
    first: CrossoverStep
    chosen: CrossoverStep | None

    @property
    def tokens_per_month(self) -> float | None:
        """The crossover volume, tokens/month (simple form, on ``chosen``); None when never."""
        return None if self.chosen is None else self.chosen.simple_tokens_per_month


def find_crossover(plan: OnPremPlan, *, hosted_usd_per_m: float, input_share: float) -> Crossover:
    """Crossover volume against a hosted blended price ($/M) for a mix with ``input_share``."""
    check_number("hosted_usd_per_m", hosted_usd_per_m)
    price_usd_per_token = hosted_usd_per_m / TOKENS_PER_M
    min_gpus = plan.min_replicas * gpus_per_replica(plan)
    gpus = deployed_gpu_count(plan, min_gpus)
    step_gpus = plan.gpus_per_node if plan.whole_nodes else gpus_per_replica(plan)
    first = step = _crossover_step(plan, gpus, price_usd_per_token, input_share)
    if math.isinf(first.exact_tokens_per_month):
        return Crossover(status=CrossoverStatus.NEVER_PRICE, first=first, chosen=None)
    while not step.feasible:
        gpus += step_gpus
        if node_count(plan, gpus) > plan.max_nodes:
            return Crossover(status=CrossoverStatus.NEVER_CAPACITY, first=first, chosen=None)
        step = _crossover_step(plan, gpus, price_usd_per_token, input_share)
    return Crossover(status=CrossoverStatus.FEASIBLE, first=first, chosen=step)


def _crossover_step(
    plan: OnPremPlan, gpus: int, price_usd_per_token: float, input_share: float
) -> CrossoverStep:
    at_full = onprem_monthly_cost(plan, gpu_count=gpus, utilization=1.0)
    at_idle = onprem_monthly_cost(plan, gpu_count=gpus, utilization=0.0)
    cap_1 = capacity_tokens_per_month(plan, gpu_count=gpus, input_share=input_share)
    variable_usd_per_token = (at_full.total_usd_per_month - at_idle.total_usd_per_month) / cap_1
    return CrossoverStep(
        onprem=at_full,
        simple_tokens_per_month=_ratio(at_full.total_usd_per_month, price_usd_per_token),
        exact_tokens_per_month=_ratio(
            at_idle.total_usd_per_month, price_usd_per_token - variable_usd_per_token
        ),
        capacity_at_target_tokens_per_month=cap_1 * plan.target_utilization,
    )


def _ratio(cost_usd: float, margin_usd_per_token: float) -> float:
    return cost_usd / margin_usd_per_token if margin_usd_per_token > 0 else math.inf


def ceil_whole(value: float) -> int:
    """ceil() that ignores float noise: 3.0000000000004 replicas or months is 3."""
    if not math.isfinite(value):
        raise ValueError(f"cannot count {value} whole units: an input is out of scale")
    return math.ceil(round(value, 9))


def check_number(
    label: str,
    value: float,
    *,
    positive: bool = False,
    minimum: float = 0.0,
    maximum: float = math.inf,
) -> float:
    """``value`` when it is a finite number in range, else ``ValueError`` naming ``label``."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or not math.isfinite(value) or not minimum <= value <= maximum:
        raise ValueError(
            f"{label} must be a finite number in [{minimum}, {maximum}], got {value!r}"
        )
    if positive and value == minimum:
        raise ValueError(f"{label} must be greater than {minimum}, got {value!r}")
    return value


def check_count(label: str, value: int, *, maximum: int | None = None) -> int:
    """``value`` when it is a whole number ≥ 1 (and ≤ ``maximum``), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{label} must be a whole number ≥ 1, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{label} must be at most {maximum}, got {value!r}")
    return value


def check_fields(
    owner: object,
    names: tuple[str, ...],
    *,
    positive: bool = False,
    minimum: float = 0.0,
    maximum: float = math.inf,
) -> None:
    """``check_number`` on each named field of ``owner``; errors name ``Class.field``."""
    for name in names:
        label = f"{type(owner).__name__}.{name}"
        value = getattr(owner, name)
        check_number(label, value, positive=positive, minimum=minimum, maximum=maximum)
