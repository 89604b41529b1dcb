"""Budgets (docs/governance.md): a request past a hard limit is refused with 429 budget_exceeded
before any upstream call, in the client family's shape; the soft threshold shows in a header,
a gauge and /admin/budgets; one replica trips at the exact request, two replicas on one
PostgreSQL overshoot by at most what the other spent since its last refresh."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from metering.store import create_db_engine, upgrade_schema
from tests.conftest import backend_models
from tests.support import Gateway, wait_for

MESSAGES: list[Any] = [{"role": "user", "content": "spend a little"}]


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(
        tmp_path_factory.mktemp("budgets") / "tm.db",
        {
            "models": backend_models(fakes),
            "budgets": {
                "refresh_interval_s": 0.1,
                "limits": [{"scope": "team", "subject": "capped", "limit_tokens": 0}],
            },
        },
    ).start()
    yield gw
    gw.stop()


def new_key(gateway: Gateway, **fields: Any) -> tuple[str, str]:
    r = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"user": "spender", "team": "t-" + uuid.uuid4().hex[:8], **fields},
        headers=gateway.admin_headers,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def set_budget(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    r = httpx.post(f"{gateway.url}/admin/budgets", json=fields, headers=gateway.admin_headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def budgets(gateway: Gateway, **params: Any) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{gateway.url}/admin/budgets", params=params, headers=gateway.admin_headers)
    assert r.status_code == 200, r.text
    return {b["id"]: b for b in r.json()}


def stream(gateway: Gateway, key: str, model: str = "claude") -> httpx.Response:
    """One streamed chat completion, read to its end; the raw response (headers, status)."""
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": MESSAGES, "stream": True, "max_tokens": 8},
        timeout=30,
    ) as r:
        r.read()
    return r


def cost_of_one(gateway: Gateway, model: str = "claude") -> tuple[int, int]:
    """What one such streamed request costs (micro-USD) and spends (tokens), from the ledger."""
    key_id, key = new_key(gateway)
    assert stream(gateway, key, model).status_code == 200
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    return event["cost_micro_usd"], event["input_tokens"] + event["output_tokens"]


def test_a_usd_budget_trips_at_the_exact_request_with_streams(gateway, fakes):
    cost, _ = cost_of_one(gateway)
    assert cost > 0
    key_id, key = new_key(gateway)
    budget = set_budget(gateway, scope="key", subject=key_id, limit_usd=3.5 * cost / 1e6)
    answers = [stream(gateway, key) for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    # soft threshold 80 %: the 4th request was admitted at 3/3.5 = 86 % used
    warnings = [r.headers.get("x-tokenmeter-budget-warning") for r in answers]
    assert warnings[:3] == [None, None, None]
    assert warnings[3] == f"key:{key_id}:month=86%"
    upstream_before = fakes["anthropic"].stats.requests
    refused = stream(gateway, key)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "rate_limit_error")
    assert f"key:{key_id}:month" in error["message"]
    assert fakes["anthropic"].stats.requests == upstream_before  # no upstream call
    events = gateway.wait_events(5, "key_id = :k", k=key_id)
    assert [e["error_code"] for e in events] == ["", "", "", "", "budget_exceeded"]
    state = budgets(gateway)[budget["id"]]
    assert (state["status"], state["spent_micro_usd"]) == ("exceeded", 4 * cost)


def test_the_hard_limit_answers_anthropic_clients_in_their_shape(gateway):
    key_id, key = new_key(gateway)
    set_budget(gateway, scope="key", subject=key_id, limit_usd=0)
    c = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as exc:
        c.messages.create(model="claude", max_tokens=10, messages=MESSAGES)
    body = exc.value.response.json()
    assert (body["type"], body["error"]["type"]) == ("error", "rate_limit_error")
    assert body["error"]["message"].startswith("budget_exceeded: the monthly budget key:")


def test_a_token_budget_from_the_config_refuses_a_team(gateway):
    _, key = new_key(gateway, team="capped")
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as exc:
        c.chat.completions.create(model="vllm-model", messages=MESSAGES)
    assert exc.value.code == "budget_exceeded"
    assert "team:capped:month" in exc.value.message
    listed = budgets(gateway)["config:team:capped:month"]
    assert (listed["source"], listed["status"], listed["limit_tokens"]) == ("config", "exceeded", 0)


def test_a_user_token_budget_counts_embeddings_and_chat_alike(gateway):
    _, tokens = cost_of_one(gateway, "vllm-model")
    user = "u-" + uuid.uuid4().hex[:8]
    keys = [new_key(gateway, user=user)[1] for _ in range(2)]  # two keys, one user
    set_budget(gateway, scope="user", subject=user, limit_tokens=2 * tokens)
    assert stream(gateway, keys[0], "vllm-model").status_code == 200
    assert stream(gateway, keys[1], "vllm-model").status_code == 200
    assert stream(gateway, keys[0], "vllm-model").status_code == 429


def test_the_gauge_shows_each_budget_used_share(gateway):
    key_id, key = new_key(gateway)
    _, tokens = cost_of_one(gateway, "vllm-model")
    set_budget(gateway, scope="key", subject=key_id, limit_tokens=4 * tokens)
    stream(gateway, key, "vllm-model")
    name = f'tokenmeter_budget_used_ratio{{budget="key:{key_id}:month"}}'

    def gauge() -> float | None:
        for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
            if line.startswith(name):
                return float(line.split()[-1])
        return None

    assert wait_for(lambda: gauge() == 0.25)


def test_budgets_are_validated_and_unique(gateway):
    url, headers = f"{gateway.url}/admin/budgets", gateway.admin_headers
    bad = [
        {"scope": "key", "subject": "k"},  # no limit
        {"scope": "galaxy", "subject": "k", "limit_usd": 1},
        {"scope": "key", "subject": "k", "limit_usd": -1},
        {"scope": "key", "subject": "k", "limit_usd": 1, "period": "year"},
        {"scope": "key", "subject": "k", "limit_usd": 1, "soft_ratio": 1.5},
    ]
    for body in bad:
        assert httpx.post(url, json=body, headers=headers).status_code == 422, body
    body = {"scope": "team", "subject": "dup", "limit_usd": 1}
    assert httpx.post(url, json=body, headers=headers).status_code == 201
    assert httpx.post(url, json=body, headers=headers).status_code == 409
    config = {"scope": "team", "subject": "capped", "limit_usd": 5}
    assert httpx.post(url, json=config, headers=headers).status_code == 409
    assert httpx.post(url, json=body).status_code == 401  # the admin key, always


def test_deleting_a_budget_lifts_it(gateway):
    key_id, key = new_key(gateway)
    budget = set_budget(gateway, scope="key", subject=key_id, limit_tokens=0)
    assert stream(gateway, key, "vllm-model").status_code == 429
    r = httpx.delete(f"{gateway.url}/admin/budgets/{budget['id']}", headers=gateway.admin_headers)
    assert r.status_code == 200
    assert stream(gateway, key, "vllm-model").status_code == 200
    gone = httpx.delete(
        f"{gateway.url}/admin/budgets/{budget['id']}", headers=gateway.admin_headers
    )
    assert gone.status_code == 404


# --- two replicas on one PostgreSQL ------------------------------------------------------------


def replicas(fakes, tmp_path: Path, pg_url: str, refresh_s: float) -> list[Gateway]:
    engine = create_db_engine(pg_url)
    upgrade_schema(engine)  # shared databases are migrated once, by `tokenmeter db upgrade`
    engine.dispose()
    gws = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = {"models": backend_models(fakes), "budgets": {"refresh_interval_s": refresh_s}}
        gws.append(Gateway(tmp_path / name / "tm.db", config, db_url=pg_url).start())
    return gws


@pytest.fixture
def pair(fakes, tmp_path, pg_url) -> Iterator[list[Gateway]]:
    gws = replicas(fakes, tmp_path, pg_url, refresh_s=0.1)
    yield gws
    for gw in gws:
        gw.stop()


@pytest.fixture
def stale_pair(fakes, tmp_path, pg_url) -> Iterator[list[Gateway]]:
    """Replicas that refresh only when asked (``/admin/budgets?fresh=true``)."""
    gws = replicas(fakes, tmp_path, pg_url, refresh_s=3600)
    yield gws
    for gw in gws:
        gw.stop()


def test_two_replicas_trip_at_the_exact_request_once_spend_has_propagated(pair):
    a, b = pair
    cost, _ = cost_of_one(a)
    key_id, key = new_key(a)
    budget = set_budget(a, scope="key", subject=key_id, limit_usd=3.5 * cost / 1e6)
    wait_for(lambda: budget["id"] in budgets(b))
    for i in range(4):
        assert stream((a, b)[i % 2], key).status_code == 200, i
        # both replicas see the spend after the writer's flush and their next refresh
        wait_for(
            lambda i=i: all(
                budgets(g)[budget["id"]]["spent_micro_usd"] == (i + 1) * cost for g in pair
            )
        )
    assert stream(a, key).status_code == 429
    assert stream(b, key).status_code == 429


def test_overshoot_with_two_replicas_is_what_the_other_spent_since_its_refresh(stale_pair):
    a, b = stale_pair
    cost, _ = cost_of_one(a)
    key_id, key = new_key(a)
    budget = set_budget(a, scope="key", subject=key_id, limit_usd=3.5 * cost / 1e6)
    budgets(b, fresh="true")
    assert [stream(a, key).status_code for _ in range(5)] == [200] * 4 + [429]
    # b last read the ledger before a spent: its own view is still under the limit
    assert stream(b, key).status_code == 200
    assert budgets(b)[budget["id"]]["spent_micro_usd"] == cost
    a.wait_events(6, "key_id = :k", k=key_id)
    wait_for(lambda: budgets(b, fresh="true")[budget["id"]]["spent_micro_usd"] == 5 * cost)
    assert stream(b, key).status_code == 429
    assert stream(a, key).status_code == 429
