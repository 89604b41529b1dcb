"""Hardware and open-model presets for a migration target, each figure with its provenance.

A target is an open model on a GPU type, bought (whole nodes, in colocation) or rented by the
GPU-hour. Model throughput is given per H100 SXM (tco.md §4.2) and scaled to other GPUs:
decode by the bandwidth-bound factor, prefill by dense FP8 compute. Figures marked ``est.`` are
derived, not measured on that hardware: calibrate them with ``vllm bench serve`` before
quoting a sizing. The RTX rigs are the seed's small-team scenarios (``cost.scenarios``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import TypeVar

from cost.capacity import OnPremPlan
from cost.scenarios import (
    COLO_USD_PER_KW_MONTH,
    H100_SXM_POWER_KW,
    HGX_H100_NODE_CAPEX_USD,
    Provenance,
    Scenario,
    get_scenario,
)

ACQUIRE_MODES = ("buy", "rent")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GpuPreset:
    """One GPU type in an 8-GPU node: memory, all-in power, price to buy and to rent, speed
    relative to an H100 SXM (decode, prefill)."""

    name: str
    vram_gb: float
    power_kw: float
    node_capex_usd: float
    rent_usd_per_gpu_hour: float
    decode_vs_h100: float
    prefill_vs_h100: float
    provenance: Mapping[str, Provenance]


@dataclass(frozen=True, slots=True)
class ModelPreset:
    """One open model as served by vLLM: weights in memory, VRAM headroom, per-H100 rates."""

    name: str
    description: str
    memory_gb: float
    vram_headroom: float
    prefill_tokens_per_s_h100: float
    decode_tokens_per_s_h100: float
    provenance: Mapping[str, Provenance]


def _p(kind: str, note: str, *sources: str) -> Provenance:
    return Provenance(kind, note, sources)


_H200_NODE_EST = HGX_H100_NODE_CAPEX_USD + 8 * (32_000 - 30_000)  # H100 quote, H200 MSRP
GPUS: Mapping[str, GpuPreset] = MappingProxyType(
    {
        g.name: g
        for g in (
            GpuPreset(
                "h100-node", 80.0, H100_SXM_POWER_KW, HGX_H100_NODE_CAPEX_USD, 2.69, 1.0, 1.0,
                {
                    "vram": _p("list", "H100 SXM 80 GB", "hf-hardware"),
                    "power": _p("est.", "700 W × DGX node overhead 1.82", "dgx-power"),
                    "price": _p("list", "8×H100 HGX quote, Aug 2024", "node-quote"),
                    "rent": _p("list", "H100 SXM on-demand $/GPU-hour, 2026", "gpu-rent"),
                    "speed": _p("list", "the reference GPU of tco.md §4.2", "tco-md"),
                },
            ),
            GpuPreset(
                "h200-node", 141.0, H100_SXM_POWER_KW, _H200_NODE_EST, 3.59, 1.2, 1.0,
                {
                    "vram": _p("list", "H200 SXM 141 GB", "hf-h200"),
                    "power": _p("est.", "700 W TDP as H100 × node overhead", "dgx-power"),
                    "price": _p("est.", "H100 HGX quote with H200 MSRP $32k/GPU", "hf-h200"),
                    "rent": _p("list", "H200 on-demand $3.59–4.54/GPU-hour", "gpu-rent"),
                    "speed": _p("est.", "decode ×1.2 (bandwidth 4.8/3.35, sublinear)", "tco-md"),
                },
            ),
            GpuPreset(
                "l40s-node", 48.0, 0.35 * 10.2 / 5.6, 8 * 9_000.0 + 30_000.0, 0.86, 0.26, 0.37,
                {
                    "vram": _p("list", "L40S 48 GB GDDR6, 864 GB/s", "l40s-rent"),
                    "power": _p("est.", "350 W TDP × DGX node overhead 1.82", "dgx-power"),
                    "price": _p(
                        "est.", "8 × $9,000 MSRP + ~$30k PCIe server (assumption)", "l40s-msrp"
                    ),
                    "rent": _p("list", "L40S on-demand $0.79–0.86/GPU-hour", "l40s-rent"),
                    "speed": _p(
                        "est.", "decode ×0.26 (bandwidth), prefill ×0.37 (733/1,979 TF FP8)",
                        "tco-md",
                    ),
                },
            ),
            GpuPreset(
                "b200-node", 180.0, 14.3 / 8, 515_000.0, 5.98, 2.0, 2.27,
                {
                    "vram": _p("list", "HGX B200: 8 × 180 GB", "b200-specs"),
                    "power": _p("list", "DGX B200 14.3 kW / 8 GPUs", "dgx-b200-power"),
                    "price": _p("est.", "no public HGX B200 quote found; calibrate"),
                    "rent": _p("list", "B200 on-demand $5.98–6.03/GPU-hour", "gpu-rent"),
                    "speed": _p(
                        "est.", "decode ×2.0 (8.0/3.35 TB/s, sublinear); prefill 4.5/1.98 PF",
                        "b200-specs",
                    ),
                },
            ),
        )
    }
)  # fmt: skip

MODELS: Mapping[str, ModelPreset] = MappingProxyType(
    {
        m.name: m
        for m in (
            ModelPreset(
                "mistral-large-3", "Mistral Large 3 (675B MoE, 41B active), FP8",
                675.0, 1.3, 9_650.0, 763.0,
                {
                    "memory": _p("list", "675B parameters × 1 byte (FP8)", "hf-large-3"),
                    "headroom": _p(
                        "est.", "FP8 runs on one 8×H200 node (1,128 GB): headroom ≤ 1.67",
                        "vllm-large-3",
                    ),
                    "prefill": _p("est.", "0.4 × 1,979 TFLOPS / (2 × 41B active)"),
                    "decode": _p(
                        "est.", "886/GPU (70B FP8) × 70.6/41, halved for expert spread",
                        "lambda-vllm",
                    ),
                },
            ),
            ModelPreset(
                "devstral-2", "Devstral 2 (123B dense), FP8", 123.0, 2.0, 3_200.0, 500.0,
                {
                    "memory": _p("est.", "123B parameters × 1 byte (FP8)"),
                    "headroom": _p("seed", "plan for 2× VRAM headroom", "seed"),
                    "prefill": _p("est.", "as Mistral Large 2 123B FP8 (tco.md §4.2)", "tco-md"),
                    "decode": _p("est.", "886/GPU (70B FP8) × 70.6/123", "lambda-vllm"),
                },
            ),
            ModelPreset(
                "mistral-small", "Mistral Small 3.2 (24B dense), FP8", 24.0, 2.0, 16_800.0,
                2_500.0,
                {
                    "memory": _p("est.", "24B parameters × 1 byte (FP8)"),
                    "headroom": _p("seed", "plan for 2× VRAM headroom", "seed"),
                    "prefill": _p("est.", "0.4 × FP8 FLOPS / (2 × 23.6B) (tco.md §4.2)", "tco-md"),
                    "decode": _p("est.", "8,155 (8B FP8) × 8/24; not measured", "cost-meter"),
                },
            ),
            ModelPreset(
                "devstral-small-2", "Devstral Small 2 (24B dense), FP8", 24.0, 2.0, 16_800.0,
                2_500.0,
                {
                    "memory": _p("est.", "24B parameters × 1 byte (FP8)"),
                    "headroom": _p("seed", "plan for 2× VRAM headroom", "seed"),
                    "prefill": _p("est.", "as Mistral Small 24B (tco.md §4.2)", "tco-md"),
                    "decode": _p("est.", "as Mistral Small 24B; not measured", "cost-meter"),
                },
            ),
        )
    }
)  # fmt: skip


def target_scenario(*, gpu: str, model: str, acquire: str = "buy") -> Scenario:
    """``model`` on ``gpu`` nodes, bought in colocation or rented; ValueError naming the choices
    when a name is unknown or the model does not fit one node."""
    g, m = _pick(GPUS, gpu, "gpu"), _pick(MODELS, model, "model")
    if acquire not in ACQUIRE_MODES:
        raise ValueError(f"unknown acquire {acquire!r}; choices: {', '.join(ACQUIRE_MODES)}")
    base = get_scenario("enterprise-hgx-colo")
    entries: dict[str, tuple[object, Provenance]] = {
        "gpu_name": (f"{g.name} ({acquire})", _p("list", "preset name")),
        "vram_gb_per_gpu": (g.vram_gb, g.provenance["vram"]),
        "power_kw_per_gpu": (g.power_kw, g.provenance["power"]),
        "model_memory_gb": (m.memory_gb, m.provenance["memory"]),
        "vram_headroom": (m.vram_headroom, m.provenance["headroom"]),
        "prefill_tokens_per_s_per_gpu": (
            m.prefill_tokens_per_s_h100 * g.prefill_vs_h100,
            _scaled(m.provenance["prefill"], g.provenance["speed"]),
        ),
        "decode_tokens_per_s_per_gpu": (
            m.decode_tokens_per_s_h100 * g.decode_vs_h100,
            _scaled(m.provenance["decode"], g.provenance["speed"]),
        ),
    }
    if acquire == "buy":
        entries["capex_usd_per_node"] = (g.node_capex_usd, g.provenance["price"])
        entries["colo_usd_per_kw_month"] = (
            COLO_USD_PER_KW_MONTH,
            base.provenance["colo_usd_per_kw_month"],
        )
    else:
        rented = _p("assumption", "in the hourly rate")
        entries |= {
            "rent_usd_per_gpu_hour": (g.rent_usd_per_gpu_hour, g.provenance["rent"]),
            "capex_usd_per_node": (0.0, rented),
            "capex_usd_per_gpu": (0.0, rented),
            "energy_usd_per_gpu_month": (0.0, rented),
            "colo_usd_per_kw_month": (0.0, rented),
            "whole_nodes": (False, _p("assumption", "rented by the GPU")),
        }
    known = {f.name for f in fields(OnPremPlan)}
    assert set(entries) <= known, set(entries) - known
    scenario = base.with_overrides(**{k: v for k, (v, _) in entries.items()})
    provenance = {**scenario.provenance, **{k: src for k, (_, src) in entries.items()}}
    name = f"{m.name}@{g.name}" + ("" if acquire == "buy" else "-rented")
    return Scenario(name, m.description + f" on {g.name}", scenario.plan, provenance, ())


def _scaled(model: Provenance, gpu: Provenance) -> Provenance:
    return Provenance(
        "est." if "est." in (model.kind, gpu.kind) else model.kind,
        f"{model.note}; scaled to the GPU: {gpu.note}",
        model.sources + gpu.sources,
    )


def _pick(table: Mapping[str, _T], name: str, what: str) -> _T:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} preset {name!r}; presets: {', '.join(table)}") from None
