"""Presets for the TCO model, each default with its provenance (tco.md §3, §5, §7).

Two paths from the seed articles, as corrected by tco.md §1: the enterprise H100 path (own
data centre, GPUs bought one by one; or whole 8-GPU HGX nodes in colocation) and the
small-team consumer-GPU rig (RTX 3090 or 4090 running Mistral Small 24B at Q4). Every field is
overridable with ``Scenario.with_overrides``. Volumes are never part of a preset: they come
from the meter, org-wide per month; ``seed_volume`` builds one the way the seeds' examples do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType

from cost.capacity import (
    DEFAULT_MAX_NODES,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_PUE,
    DEFAULT_STAFF_FTE_FRACTION,
    DEFAULT_STAFF_LOADED_USD_PER_YEAR,
    DEFAULT_TARGET_UTILIZATION,
    DEFAULT_TENSOR_PARALLEL_SIZES,
    DEFAULT_USD_PER_KWH,
    DEFAULT_VRAM_HEADROOM,
    CapacityBasis,
    OnPremPlan,
    check_number,
)
from cost.tco import MonthlyTokens, ObservedVolume

INPUT_SHARE_IF_UNKNOWN = 0.75  # assumption: 75/25 input/output when unmeasured (tco.md conventions)
BUSINESS_SECONDS_PER_MONTH = 633_600  # 22 d × 8 h (tco.md conventions)
SEED_PEAK_TO_BUSINESS_AVERAGE = 3.0  # seed examples: peak = 3 × business-hours average (tco.md)
# The enterprise seed's "15M tokens/month" for 200 seats reads two ways (tco.md §1.1, §7 T3/T6):
SEED_ORG_TOKENS_PER_MONTH = 15_000_000  # (a) org-wide: what the text says
SEED_PER_SEAT_TOKENS_PER_MONTH = 15_000_000 * 200  # (b) per seat: what its $150k/yr implies

H100_SXM_POWER_KW = 0.7 * 10.2 / 5.6  # 700 W TDP × DGX H100 10.2 kW / 5.6 kW = 1.275 [dgx-power]
H100_SXM_CAPEX_USD = 30_000.0  # MSRP, street $25–35k [hf-hardware]; the seed's "$120k" = 4 GPUs
HGX_H100_NODE_CAPEX_USD = 317_000.0  # Thinkmate 8×H100 HGX quote, Aug 2024 [node-quote]
COLO_USD_PER_KW_MONTH = 195.94  # CBRE H2 2025, 250–500 kW, N. America [cbre-colo]
RIG_REST_CAPEX_USD = 900.0  # seed: CPU 350 + RAM 180 + board/SSD/PSU 370 (4090: "full build ~$900")
RTX3090_CAPEX_USD = 500.0  # seed: used RTX 3090 24GB
RTX4090_CAPEX_USD = 1_600.0  # seed: RTX 4090 24GB
RIG_ENERGY_USD_PER_MONTH = 25.0  # seed "$15–25/month", upper end; holds at ~20–35 % duty (§1.2)
MISTRAL_SMALL_24B_Q4_GB = 13.85  # Q4_1 weights [q4-size]
RIG_VRAM_HEADROOM = 1.7  # 24 GB / 13.85 GB = 1.73: the seed's 2× rule cannot hold on a rig (§1.2)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a default comes from: tco.md's kind of number, a note, and source keys (§9)."""

    kind: str  # measured | list | est. | assumption | seed | override
    note: str
    sources: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(SOURCE_URLS[key] for key in self.sources)


SOURCE_URLS: Mapping[str, str] = MappingProxyType(
    {
        "seed": "the two seed articles (tco.md §1)",
        "hf-hardware": "https://huggingface.co/hardware/h100",
        "node-quote": "https://www.supercluster.blog/p/4-nvidia-dgx-h100-hardware",
        "dgx-power": "https://www.supercluster.blog/p/6-ai-supercluster-nvidia-dgx-h100",
        "uptime-pue": "https://intelligence.uptimeinstitute.com",
        "eia": "https://www.eia.gov/electricity/annual/",
        "cbre-colo": "https://worldstopdatacenters.com",
        "cost-meter": "https://github.com/pChitral/vllm-cost-meter",
        "lambda-vllm": "https://github.com/LambdaLabsML/vllm-benchmark",
        "llamacpp-bench": "https://github.com/XiongjieDai/GPU-Benchmarks-on-LLM-Inference",
        "q4-size": "https://prositronic.eu",
        "hf-h200": "https://huggingface.co/hardware/h200",
        "vllm-large-3": "https://docs.vllm.ai/projects/recipes/en/latest/Mistral/Mistral-Large-3.html",
        "hf-large-3": "https://huggingface.co/collections/mistralai/mistral-large-3",
        "gpu-rent": "https://deploybase.ai/articles/b200-vs-h200-vs-h100",
        "gpu-rent-2": "https://www.spheron.network/blog/nvidia-h200-vs-b200-vs-gb200",
        "b200-specs": "https://docs.vultr.com/inference-cookbook/cuda/getting-started/hardware-overview",
        "dgx-b200-power": "https://madcoolstuff.com/guides/datacenter-inference-blueprint",
        "l40s-rent": "https://modal.com/blog/nvidia-l40s-price-article",
        "l40s-msrp": "https://rentgpu.org/zh/gpus/l40s/ai-models",
        "tco-md": "reference cost model (docs/cost-model.md), §4.2 defaults",
    }
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named on-prem plan, the provenance of each of its fields, and the hosted models to
    compare it with (litellm price-map keys, like-for-like first)."""

    name: str
    description: str
    plan: OnPremPlan
    provenance: Mapping[str, Provenance]
    hosted_models: tuple[str, ...]

    def with_overrides(self, **overrides: object) -> Scenario:
        """This scenario with some plan fields replaced; their provenance becomes "override".

        Unknown field names raise ``ValueError`` listing the known ones; values are checked by
        ``OnPremPlan`` as usual.
        """
        known = {f.name for f in fields(OnPremPlan)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown OnPremPlan field(s) {', '.join(unknown)} in overrides of scenario "
                f"{self.name!r}; known fields: {', '.join(sorted(known))}"
            )
        overridden = Provenance("override", "set by the operator")
        provenance = {**self.provenance, **dict.fromkeys(overrides, overridden)}
        return replace(
            self,
            plan=replace(self.plan, **overrides),  # type: ignore[arg-type]
            provenance=MappingProxyType(provenance),
        )


def seed_volume(
    tokens_per_month: float,
    *,
    input_share: float = INPUT_SHARE_IF_UNKNOWN,
    peak_to_business_average: float = SEED_PEAK_TO_BUSINESS_AVERAGE,
    use_case: str = "all",
) -> ObservedVolume:
    """An org-wide monthly volume as the seeds' examples assume it (tco.md §7 T8): one use case,
    uncached input and output at ``input_share``, and peaks of ``peak_to_business_average`` ×
    the average over a 176-hour business month. Use metered volumes where there are any."""
    check_number("tokens_per_month", tokens_per_month)
    check_number("input_share", input_share, maximum=1.0)
    tokens = MonthlyTokens(
        input_tokens=tokens_per_month * input_share,
        output_tokens=tokens_per_month * (1 - input_share),
    )
    check_number("peak_to_business_average", peak_to_business_average)
    per_s = peak_to_business_average / BUSINESS_SECONDS_PER_MONTH
    return ObservedVolume(
        {use_case: tokens},
        peak_input_tokens_per_s=tokens.input_tokens * per_s,
        peak_output_tokens_per_s=tokens.output_tokens * per_s,
    )


def get_scenario(name: str) -> Scenario:
    """The preset called ``name``; ``ValueError`` listing the presets when there is none."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; presets: {', '.join(SCENARIOS)}") from None


_Entry = tuple[object, Provenance]


def _p(kind: str, note: str, *sources: str) -> Provenance:
    return Provenance(kind, note, sources)


_EVERY_PRESET: dict[str, _Entry] = {
    "gpu_count": (None, _p("assumption", "None: sized from the observed peak (tco.md §2.4)")),
    "max_nodes": (DEFAULT_MAX_NODES, _p("assumption", "crossover search limit n_max (§2.6)")),
    "residual_fraction": (0.0, _p("assumption", "no resale value (tco.md §3)")),
    "interest_rate_per_year": (0.0, _p("assumption", "straight-line amortization (tco.md §2.3)")),
    "usd_per_kwh": (DEFAULT_USD_PER_KWH, _p("est.", "US commercial mid-range, 2023", "eia")),
    "facility_usd_per_month": (0.0, _p("assumption", "nothing beyond PUE / colo (tco.md §2.3)")),
    "software_usd_per_month": (0.0, _p("list", "vLLM / TGI / SGLang: no licence (tco.md §2.3)")),
    "support_rate_per_year": (0.0, _p("assumption", "optional; DGX quote 20 %/yr", "node-quote")),
    "rent_usd_per_gpu_hour": (0.0, _p("assumption", "bought, not rented")),
    "target_utilization": (
        DEFAULT_TARGET_UTILIZATION,
        _p("assumption", "0.6–0.9 of saturation keeps TTFT low (tco.md §4.2)", "cost-meter"),
    ),
    "staff_loaded_usd_per_year": (
        DEFAULT_STAFF_LOADED_USD_PER_YEAR,
        _p("seed", "$50–70k at 20 % ⇒ $250–350k loaded; midpoint", "seed"),
    ),
}
_ENTERPRISE: dict[str, _Entry] = {
    "amortization_months": (36, _p("seed", "amortized over three years", "seed")),
    "horizon_months": (36, _p("seed", "three-year horizon (tco.md §2.5)", "seed")),
    "staff_fte_fraction": (DEFAULT_STAFF_FTE_FRACTION, _p("seed", "20 % of one engineer", "seed")),
    "vram_headroom": (DEFAULT_VRAM_HEADROOM, _p("seed", "plan for 2× VRAM headroom", "seed")),
    "min_replicas": (DEFAULT_MIN_REPLICAS, _p("assumption", "production HA (tco.md §3)")),
    "energy_usd_per_gpu_month": (None, _p("assumption", "computed from power (tco.md §2.3)")),
    "capacity_basis": (CapacityBasis.HARMONIC, _p("est.", "conservative form (tco.md §2.4)")),
    "gpu_name": ("H100 SXM 80GB", _p("seed", "the seed's GPU", "seed")),
    "vram_gb_per_gpu": (80.0, _p("list", "H100 SXM", "hf-hardware")),
    "power_kw_per_gpu": (H100_SXM_POWER_KW, _p("est.", "TDP × node overhead", "dgx-power")),
    "gpus_per_node": (8, _p("list", "HGX / DGX H100", "dgx-power")),
    "tensor_parallel_sizes": (DEFAULT_TENSOR_PARALLEL_SIZES, _p("list", "TP within a node")),
    # The seed deploys Mistral Large on-prem: Mistral Large 2 (123B) in FP8 (tco.md §4.2).
    "prefill_tokens_per_s_per_gpu": (3_200.0, _p("est.", "0.4 × FP8 FLOPS / (2 × 123B)")),
    "decode_tokens_per_s_per_gpu": (
        500.0,
        _p("est.", "886/GPU (70B FP8) × 70.6/123", "lambda-vllm"),
    ),
    "model_memory_gb": (123.0, _p("est.", "123B parameters × 1 byte (FP8)")),
}
_OWN_DC: dict[str, _Entry] = {
    "pue": (DEFAULT_PUE, _p("measured", "industry average 2023", "uptime-pue")),
    "colo_usd_per_kw_month": (0.0, _p("assumption", "own data centre: no colo rent")),
    "capex_usd_per_gpu": (H100_SXM_CAPEX_USD, _p("list", "MSRP; street $25–35k", "hf-hardware")),
    "capex_usd_per_node": (0.0, _p("assumption", "server cost inside the per-GPU price")),
    "whole_nodes": (False, _p("assumption", "GPUs bought one by one, as the seed does")),
}
_COLO: dict[str, _Entry] = {
    "pue": (1.0, _p("assumption", "cooling included in the colo rate (tco.md §2.3)")),
    "colo_usd_per_kw_month": (COLO_USD_PER_KW_MONTH, _p("measured", "CBRE H2 2025", "cbre-colo")),
    "capex_usd_per_gpu": (0.0, _p("list", "GPUs inside the node price", "node-quote")),
    "capex_usd_per_node": (HGX_H100_NODE_CAPEX_USD, _p("list", "8×H100 HGX quote", "node-quote")),
    "whole_nodes": (True, _p("list", "HGX is sold as an 8-GPU node", "node-quote")),
}
_RIG: dict[str, _Entry] = {
    "amortization_months": (24, _p("seed", "amortized over 24 months", "seed")),
    "horizon_months": (24, _p("seed", "small-team horizon (tco.md §2.5)", "seed")),
    "staff_fte_fraction": (0.0, _p("seed", "the seed leaves staff out (tco.md §7 T1)", "seed")),
    "capex_usd_per_node": (RIG_REST_CAPEX_USD, _p("seed", "CPU, RAM, board, SSD, PSU", "seed")),
    "energy_usd_per_gpu_month": (RIG_ENERGY_USD_PER_MONTH, _p("seed", "$15–25/month", "seed")),
    "pue": (1.0, _p("assumption", "office rig: no cooling plant")),
    "colo_usd_per_kw_month": (0.0, _p("assumption", "runs in the office")),
    "whole_nodes": (False, _p("assumption", "one GPU per rig")),
    "gpus_per_node": (1, _p("seed", "one GPU per rig", "seed")),
    "tensor_parallel_sizes": ((1,), _p("seed", "one GPU per rig", "seed")),
    "min_replicas": (1, _p("assumption", "one rig, no HA (tco.md §3 pilot)")),
    "vram_gb_per_gpu": (24.0, _p("list", "RTX 3090 / 4090: 24 GB", "q4-size")),
    "model_memory_gb": (MISTRAL_SMALL_24B_Q4_GB, _p("list", "Mistral Small 24B Q4_1", "q4-size")),
    "vram_headroom": (RIG_VRAM_HEADROOM, _p("est.", "largest that fits 24 GB (tco.md §1.2)")),
    "capacity_basis": (CapacityBasis.OUTPUT_ONLY, _p("est.", "output-bound (tco.md §7 T2)")),
}
_RTX3090: dict[str, _Entry] = {
    "gpu_name": ("RTX 3090 rig", _p("seed", "$1,400 budget rig", "seed")),
    "capex_usd_per_gpu": (RTX3090_CAPEX_USD, _p("seed", "used RTX 3090", "seed")),
    "power_kw_per_gpu": (0.5, _p("est.", "350 W card + ~150 W system, as 4090 (tco.md §1.2)")),
    "decode_tokens_per_s_per_gpu": (38.0, _p("est.", "single stream, Q4 24B", "llamacpp-bench")),
    "prefill_tokens_per_s_per_gpu": (
        1_373.0,
        _p("est.", "4,030 (8B pp512) × 8.03/23.57", "llamacpp-bench"),
    ),
}
_RTX4090: dict[str, _Entry] = {
    "gpu_name": ("RTX 4090 rig", _p("seed", "$2,500 performance rig", "seed")),
    "capex_usd_per_gpu": (RTX4090_CAPEX_USD, _p("seed", "RTX 4090 24GB", "seed")),
    "power_kw_per_gpu": (0.6, _p("est.", "whole system (tco.md §1.2)")),
    "decode_tokens_per_s_per_gpu": (43.0, _p("est.", "59 % of 72.8 roofline", "llamacpp-bench")),
    "prefill_tokens_per_s_per_gpu": (
        2_432.0,
        _p("est.", "7,139 (8B pp512) × 8.03/23.57", "llamacpp-bench"),
    ),
}


def _scenario(
    name: str, description: str, hosted: tuple[str, ...], *parts: dict[str, _Entry]
) -> Scenario:
    entries = {key: entry for part in parts for key, entry in part.items()}
    missing = {f.name for f in fields(OnPremPlan)} - set(entries)
    if missing:
        raise ValueError(f"scenario {name!r} has no default for {', '.join(sorted(missing))}")
    plan = OnPremPlan(**{key: value for key, (value, _) in entries.items()})  # type: ignore[arg-type]
    provenance = MappingProxyType({key: source for key, (_, source) in entries.items()})
    return Scenario(name, description, plan, provenance, hosted)


# Price-map keys only; a key gone from the installed map is a warning, never a crash
# (azure_ai/mistral-large-2407 left litellm's map in 1.110).
_LARGE_HOSTED = ("azure_ai/mistral-large-3", "claude-haiku-4-5")
_CLAUDE = ("claude-sonnet-4-5", "claude-opus-4-5")
_SMALL_HOSTED = ("azure_ai/mistral-small-2503", "azure_ai/mistral-large-3")

SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {
        s.name: s
        for s in (
            _scenario(
                "enterprise-h100",
                "Seed enterprise path: H100s at $30k each in an own data centre, Mistral Large 2 "
                "FP8, sized from the peak (the seed's 4 GPUs: gpu_count=4)",
                _LARGE_HOSTED + _CLAUDE,
                _EVERY_PRESET,
                _ENTERPRISE,
                _OWN_DC,
            ),
            _scenario(
                "enterprise-hgx-colo",
                "Enterprise path in colocation: whole 8×H100 HGX nodes at $317k, Mistral Large 2 "
                "FP8",
                _LARGE_HOSTED + _CLAUDE,
                _EVERY_PRESET,
                _ENTERPRISE,
                _COLO,
            ),
            _scenario(
                "small-team-rtx3090",
                "Seed small-team path: a $1,400 RTX 3090 rig, Mistral Small 24B Q4, 24 months",
                _SMALL_HOSTED,
                _EVERY_PRESET,
                _RIG,
                _RTX3090,
            ),
            _scenario(
                "small-team-rtx4090",
                "Seed small-team path: a $2,500 RTX 4090 rig, Mistral Small 24B Q4, 24 months",
                _SMALL_HOSTED,
                _EVERY_PRESET,
                _RIG,
                _RTX4090,
            ),
        )
    }
)
