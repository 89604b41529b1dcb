"""Runs the built-in simulated backends (the same fakes the tests use) on loopback ports."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from proxy.config.settings import ModelConfig
from proxy.simulated import FakeServer, create_anthropic_app, create_openai_app

ENV_BASES = "TOKENMETER_SIMULATED_BASES"  # handed from the CLI to each worker process

_PATHS = {
    "anthropic": "",
    "azure_mistral": "/models",
    "vllm": "/v1",
    "tgi": "/v1",
    "openai_compatible": "/v1",
}
_FLAVOURS: dict[str, Literal["vllm", "azure", "tgi"]] = {
    "azure_mistral": "azure",
    "vllm": "vllm",
    "tgi": "tgi",
    "openai_compatible": "vllm",
}


def simulated_backends(models: list[ModelConfig]) -> set[str]:
    return {d.backend for m in models for d in m.deployments if d.simulated}


@contextmanager
def run_simulated(models: list[ModelConfig]) -> Iterator[dict[str, str]]:
    """Start one fake per simulated backend type; yields api_base by "alias#index"."""
    servers: dict[str, FakeServer] = {}
    try:
        for backend in sorted(simulated_backends(models)):
            app = (
                create_anthropic_app()
                if backend == "anthropic"
                else create_openai_app(_FLAVOURS[backend])
            )
            servers[backend] = FakeServer(app).start()
        yield {
            f"{m.name}#{i}": servers[d.backend].url + _PATHS[d.backend]
            for m in models
            for i, d in enumerate(m.deployments)
            if d.simulated
        }
    finally:
        for server in servers.values():
            server.stop()


def encode_bases(bases: dict[str, str]) -> str:
    return json.dumps(bases)


def bases_from_env() -> dict[tuple[str, int], str]:
    raw = json.loads(os.environ.get(ENV_BASES) or "{}")
    out: dict[tuple[str, int], str] = {}
    for key, base in raw.items():
        alias, _, index = key.rpartition("#")
        out[(alias, int(index))] = base
    return out
