"""A few price-map entries shaped like litellm's, with the tco.md §6.1/§6.2 prices."""

from __future__ import annotations

from typing import Any

LITELLM_ENTRIES: dict[str, dict[str, Any]] = {
    "claude-haiku-4-5": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 5e-06,
        "cache_creation_input_token_cost": 1.25e-06,
        "cache_creation_input_token_cost_above_1hr": 2e-06,
        "cache_read_input_token_cost": 1e-07,
    },
    "claude-sonnet-4-5": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "cache_read_input_token_cost": 3e-07,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
    },
    "claude-opus-4-5": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 5e-06,
        "output_cost_per_token": 2.5e-05,
        "cache_creation_input_token_cost": 6.25e-06,
        "cache_creation_input_token_cost_above_1hr": 1e-05,
        "cache_read_input_token_cost": 5e-07,
    },
    "claude-3-haiku-20240307": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 2.5e-07,
        "output_cost_per_token": 1.25e-06,
        "cache_creation_input_token_cost": 3e-07,
        "cache_read_input_token_cost": 3e-08,
    },
    "azure_ai/mistral-large-3": {
        "litellm_provider": "azure_ai",
        "mode": "chat",
        "input_cost_per_token": 5e-07,
        "output_cost_per_token": 1.5e-06,
    },
    "azure_ai/mistral-large-2407": {
        "litellm_provider": "azure_ai",
        "mode": "chat",
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 6e-06,
    },
    "mistral/mistral-large-3": {
        "litellm_provider": "mistral",
        "mode": "chat",
        "input_cost_per_token": 5e-07,
        "output_cost_per_token": 1.5e-06,
    },
    "mistral/codestral-2508": {
        "litellm_provider": "mistral",
        "mode": "chat",
        "input_cost_per_token": 3e-07,
        "output_cost_per_token": 9e-07,
    },
    "mistral/mistral-embed": {
        "litellm_provider": "mistral",
        "mode": "embedding",
        "input_cost_per_token": 1e-07,
    },
    "gpt-image-1": {
        "litellm_provider": "openai",
        "mode": "image_generation",
        "input_cost_per_token": 5e-06,
        "output_cost_per_token": 4e-05,
    },
    "no-mode-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
    "free-tier-model": {"mode": "chat", "litellm_provider": "openai"},
    "sample_spec": {"mode": "one of: chat, embedding, completion", "input_cost_per_token": 0.0},
}
