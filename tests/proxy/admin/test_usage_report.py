"""GET /admin/usage: exact sums for any grouping, from rollups or events alike."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from tests.conftest import backend_models
from tests.support import Gateway

USERS = ["ann", "ben"]
AGENTS = ["vibe", "kb-search"]
MODELS = ["vllm-model", "claude", "azure-mistral"]
SESSIONS = ["s1", "s2"]


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(
        tmp_path_factory.mktemp("usage") / "tm.db",
        {
            "models": backend_models(fakes),
            "use_cases": {"coding": {"agents": ["vibe"]}, "rag": {"agents": ["kb-search"]}},
        },
    ).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def traffic(gateway) -> list[dict]:
    """One request per combination; what each client saw."""
    key = gateway.create_key(user="default", service=True)  # the declared users pay
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    seen = []
    for i, (user, agent, model, session) in enumerate(
        itertools.product(USERS, AGENTS, MODELS, SESSIONS)
    ):
        words = " ".join(["w"] * (i + 1))
        resp = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": words}],
            extra_headers={
                "X-Meter-User": user,
                "X-Meter-Agent": agent,
                "X-Meter-Session": session,
            },
        )
        seen.append(
            {
                "user": user,
                "agent": agent,
                "model": model,
                "session": session,
                "use_case": "coding" if agent == "vibe" else "rag",
                "input_tokens": resp.usage.prompt_tokens,
                "output_tokens": resp.usage.completion_tokens,
            }
        )
    gateway.wait_events(len(seen))
    return seen


def usage(gateway, **params) -> dict:
    r = httpx.get(gateway.url + "/admin/usage", params=params, headers=gateway.admin_headers)
    r.raise_for_status()
    return r.json()


def expected(traffic, groups) -> dict:
    out: dict = {}
    for t in traffic:
        key = tuple(t[g] for g in groups)
        acc = out.setdefault(key, Counter())
        acc.update(requests=1, input_tokens=t["input_tokens"], output_tokens=t["output_tokens"])
    return {k: dict(v) for k, v in out.items()}


GROUPINGS = [
    [],
    ["user"],
    ["agent", "model"],
    ["use_case"],
    ["session"],
    ["user", "agent", "session", "use_case", "model"],
]


@pytest.mark.parametrize("groups", GROUPINGS, ids=lambda g: ",".join(g) or "total")
def test_usage_sums_are_exact(gateway, traffic, groups):
    body = usage(gateway, group_by=",".join(groups))
    got = {
        tuple(r[g] for g in groups): {
            k: r[k] for k in ("requests", "input_tokens", "output_tokens")
        }
        for r in body["rows"]
    }
    assert got == expected(traffic, groups)
    assert body["source"] == ("events" if "session" in groups else "rollups")


def test_rollups_and_events_agree(gateway, traffic):
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    aligned = usage(gateway, group_by="model,user", since=(hour - timedelta(hours=1)).isoformat())
    unaligned = usage(
        gateway, group_by="model,user", since=(hour - timedelta(minutes=59, seconds=59)).isoformat()
    )
    assert (aligned["source"], unaligned["source"]) == ("rollups", "events")
    assert aligned["rows"] == unaligned["rows"]


def test_window_excludes_outside_requests(gateway, traffic):
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert usage(gateway, since=future)["rows"] == [
        {
            "requests": 0,
            "errors": 0,
            "unpriced_requests": 0,
            "input_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 0,
            "reasoning_tokens": 0,
            "cost_micro_usd": 0,
        }
    ]


def test_hosted_cost_is_priced_and_on_prem_is_zero(gateway, traffic):
    rows = {r["model"]: r for r in usage(gateway, group_by="model")["rows"]}
    claude = [t for t in traffic if t["model"] == "claude"]
    # claude-sonnet-4-5: $3 / $15 per million tokens = 3 / 15 micro-dollars per token
    assert rows["claude"]["cost_micro_usd"] == sum(
        3 * t["input_tokens"] + 15 * t["output_tokens"] for t in claude
    )
    assert rows["vllm-model"]["cost_micro_usd"] == 0


def test_unknown_grouping_is_400(gateway):
    r = httpx.get(
        gateway.url + "/admin/usage", params={"group_by": "colour"}, headers=gateway.admin_headers
    )
    assert r.status_code == 400 and "colour" in r.json()["error"]["message"]
