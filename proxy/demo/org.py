"""The synthetic organisation `tokenmeter demo` drives through the gateway.

Seats have roles; each role spends its sessions on a few use cases, with coding agents and RAG
at the head and a long tail of small ones. Sessions fall on the working days of the month, in
business hours (UTC), with several requests each. Everything follows from the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Api = Literal["anthropic", "openai", "embeddings"]
STREAM_OUTPUT_DIVISOR = 4


@dataclass(frozen=True, slots=True)
class UseCase:
    """How one use case talks to the gateway: its agent, model and request sizes (in words,
    which the simulated backends count as tokens)."""

    name: str
    agent: str
    model: str
    api: Api
    prompt_words: tuple[int, int]
    output_words: tuple[int, int] = (0, 0)
    cache_read: tuple[int, int] = (0, 0)  # Anthropic prompt-cache reads per request
    cached_share: float = 0.0  # OpenAI-style cached share of the prompt
    requests_per_session: float = 4.0
    stream_share: float = 0.3


def _tail(name: str, model: str = "mistral-small") -> UseCase:
    api: Api = "anthropic" if model.startswith("claude") else "openai"
    return UseCase(name, f"{name}-bot", model, api, (200, 2500), (50, 400), requests_per_session=3)


USE_CASES = {
    u.name: u
    for u in (
        UseCase("coding", "claude-code", "claude-sonnet", "anthropic", (30, 300), (60, 400),
                cache_read=(1_500, 5_500), requests_per_session=6, stream_share=0.6),
        UseCase("rag-knowledge-base", "kb-search", "mistral-large", "openai", (800, 3000),
                (100, 400), cached_share=0.3, requests_per_session=5, stream_share=0.4),
        UseCase("code-review", "review-bot", "claude-sonnet", "anthropic", (500, 2500), (80, 400),
                cache_read=(2_000, 8_000), requests_per_session=5, stream_share=0.2),
        UseCase("support-assistant", "support-copilot", "mistral-large", "openai", (400, 1600),
                (50, 250), cached_share=0.2, requests_per_session=6),
        UseCase("ticket-triage", "triage-bot", "claude-haiku", "anthropic", (150, 600), (10, 60),
                requests_per_session=3, stream_share=0.0),
        UseCase("doc-indexing", "indexer", "e5-mistral", "embeddings", (300, 1500),
                requests_per_session=20, stream_share=0.0),
        *(_tail(n) for n in ("sql-assistant", "test-generation", "log-explainer",
                             "commit-messages", "incident-summary", "release-notes",
                             "survey-analysis", "data-cleanup")),
        *(_tail(n, "mistral-large") for n in ("email-drafts", "meeting-notes", "translation",
                                              "hr-faq", "onboarding-bot", "okr-helper",
                                              "procurement-qa", "sales-prep")),
        *(_tail(n, "claude-haiku") for n in ("spec-writer", "finance-recon", "marketing-copy",
                                             "contract-review", "legal-qa", "security-triage")),
    )
}  # fmt: skip
ROLES: dict[str, tuple[float, dict[str, float]]] = {  # share of seats, session weights
    "engineering": (0.40, {"coding": 30, "code-review": 8, "sql-assistant": 5,
                           "test-generation": 5, "log-explainer": 4, "commit-messages": 4,
                           "incident-summary": 3, "release-notes": 3, "spec-writer": 3}),
    "support": (0.20, {"support-assistant": 20, "rag-knowledge-base": 20, "ticket-triage": 12,
                       "email-drafts": 6, "translation": 5}),
    "analytics": (0.15, {"rag-knowledge-base": 15, "sql-assistant": 8, "survey-analysis": 6,
                         "data-cleanup": 6, "finance-recon": 5}),
    "business": (0.15, {"rag-knowledge-base": 6, "email-drafts": 8, "meeting-notes": 8,
                        "marketing-copy": 6, "sales-prep": 6, "translation": 5}),
    "operations": (0.10, {"rag-knowledge-base": 5, "hr-faq": 5, "onboarding-bot": 4,
                          "legal-qa": 4, "contract-review": 4, "procurement-qa": 4,
                          "okr-helper": 3, "security-triage": 3, "doc-indexing": 4}),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request of the month: when, whose, and the usage it will produce."""

    at: float  # Unix seconds, sent as X-Tokenmeter-Simulated-Time
    user: str
    use_case: UseCase
    session: str
    stream: bool
    prompt_words: int
    output_words: int
    cache_read: int
    cached: int


def seats(count: int) -> list[tuple[str, str]]:
    """(user, role) for ``count`` seats, roles in their shares."""
    out: list[tuple[str, str]] = []
    for role, (part, _) in ROLES.items():
        out += [(f"{role[:3]}-{i + 1:03d}", role) for i in range(round(part * count))]
    return out[:count] or [("eng-001", "engineering")]


def plan_month(*, seed: int, seat_count: int, start: datetime, end: datetime, requests: int
               ) -> list[PlannedRequest]:  # fmt: skip
    """``requests`` requests in [start, end), in time order, session by session."""
    rng = random.Random(seed)
    people = seats(seat_count)
    days = _working_days(start, end)
    out: list[PlannedRequest] = []
    while len(out) < requests:
        user, role = rng.choice(people)
        weights = ROLES[role][1]
        use_case = USE_CASES[rng.choices(list(weights), list(weights.values()))[0]]
        at = _session_start(rng, rng.choice(days))
        session = f"{use_case.name}-{rng.getrandbits(40):010x}"
        length = 1 + int(rng.expovariate(1 / max(use_case.requests_per_session - 1, 0.1)))
        if at < start.timestamp():  # the first day of a window that starts mid-day
            continue
        for _ in range(length):
            if at >= end.timestamp() or len(out) >= requests:
                break
            out.append(_request(rng, at, user, use_case, session))
            at += 5 + rng.expovariate(1 / 90)
    out.sort(key=lambda r: r.at)
    return out


def _request(
    rng: random.Random, at: float, user: str, use_case: UseCase, session: str
) -> PlannedRequest:
    prompt, output = rng.randint(*use_case.prompt_words), rng.randint(*use_case.output_words)
    stream = rng.random() < use_case.stream_share
    return PlannedRequest(
        at=at,
        user=user,
        use_case=use_case,
        session=session,
        stream=stream,
        prompt_words=prompt,
        # The simulated backends stream one chunk per word: streamed replies are kept short so
        # that the month plays in about a minute.
        output_words=output // STREAM_OUTPUT_DIVISOR if stream else output,
        cache_read=rng.randint(*use_case.cache_read),
        cached=int(prompt * use_case.cached_share * rng.random() * 2),
    )


def _working_days(start: datetime, end: datetime) -> list[datetime]:
    days, day = [], start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days or [start]


def _session_start(rng: random.Random, day: datetime) -> float:
    hour = min(max(rng.gauss(13, 2.6), 7.0), 19.5)  # business hours, busiest early afternoon
    return day.timestamp() + hour * 3600
