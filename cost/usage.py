"""Token counts of one request, in the disjoint buckets that pricing needs.

Providers disagree on what "input" means: OpenAI's ``prompt_tokens`` includes cached tokens,
Anthropic's ``input_tokens`` excludes cache reads and writes. ``TokenUsage`` always stores the
OpenAI meaning (all input) plus the subsets, so every consumer reads one convention.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one request.

    ``input_tokens`` is all input, cache reads and writes included; ``cache_read_tokens`` and
    ``cache_write_tokens`` are subsets of it, and ``cache_write_1h_tokens`` is the subset of the
    cache writes with a one-hour TTL (Anthropic prices it at 2x input rather than 1.25x).
    ``output_tokens`` is all output; ``reasoning_tokens`` is the subset spent on hidden reasoning.
    """

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the plain input price."""
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)

    @property
    def cache_write_5m_tokens(self) -> int:
        """Cache writes with the default five-minute TTL."""
        return max(0, self.cache_write_tokens - self.cache_write_1h_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
