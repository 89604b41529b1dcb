"""Who pays (docs/governance.md): with keys required the key's user and team pay whatever the
client declares; a service key bills the users it declares; open mode bills the declared user.
Every refused request says why; team totals equal the sum of their keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import backend_models
from tests.support import Gateway

MESSAGES: list[Any] = [{"role": "user", "content": "Bill me"}]


def new_key(gateway: Gateway, **fields: Any) -> tuple[str, str]:
    r = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"user": "u-1", "team": "payments", **fields},
        headers=gateway.admin_headers,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def chat(gateway: Gateway, key: str, *, headers: dict[str, str] | None = None, **body: Any) -> Any:
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    return c.chat.completions.create(
        model=body.pop("model", "vllm-model"),
        messages=MESSAGES,
        max_tokens=5,
        extra_headers=headers or {},
        **body,
    )


SPOOFS = [
    pytest.param({"headers": {"X-Meter-User": "u-2"}}, id="x-meter-user"),
    pytest.param({"headers": {"Helicone-User-Id": "u-2"}}, id="helicone-user-id"),
    pytest.param({"headers": {"X-LiteLLM-End-User-Id": "u-2"}}, id="litellm-end-user"),
    pytest.param({"user": "u-2"}, id="body-user"),
    pytest.param({"safety_identifier": "u-2"}, id="safety_identifier"),
    pytest.param({"metadata": {"user": "u-2"}}, id="metadata.user"),
    pytest.param({"metadata": {"user_id": "u-2"}}, id="metadata.user_id"),
]


@pytest.mark.parametrize("spoof", SPOOFS)
def test_a_normal_key_pays_whatever_the_client_declares(gateway, spoof):
    key_id, key = new_key(gateway)
    chat(gateway, key, **spoof)
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["user"], event["team"], event["user_source"]) == ("u-1", "payments", "key")
    assert event["end_user"] == "u-2"  # recorded, apart from who pays


def test_claude_code_metadata_user_id_is_the_end_user_not_the_payer(gateway):
    key_id, key = new_key(gateway)
    c = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    c.messages.create(
        model="claude", max_tokens=10, messages=MESSAGES, metadata={"user_id": "device-hash"}
    )
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["user"], event["end_user"], event["user_source"]) == (
        "u-1",
        "device-hash",
        "key",
    )


@pytest.mark.parametrize("spoof", SPOOFS[:4])
def test_a_service_key_bills_the_users_it_declares(gateway, spoof):
    key_id, key = new_key(gateway, user="hr-app", service=True)
    chat(gateway, key, **spoof)
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["user"], event["end_user"], event["user_source"]) == ("u-2", "u-2", "declared")
    assert event["team"] == "payments"  # the team is always the key's


def test_a_service_key_that_declares_no_one_bills_its_own_user(gateway):
    key_id, key = new_key(gateway, user="hr-app", service=True)
    chat(gateway, key)
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["user"], event["end_user"], event["user_source"]) == (
        "hr-app",
        "unknown",
        "key",
    )


def test_keys_list_shows_which_keys_are_service_keys(gateway):
    service_id, _ = new_key(gateway, service=True)
    normal_id, _ = new_key(gateway)
    keys = httpx.get(f"{gateway.url}/admin/keys", headers=gateway.admin_headers).json()
    kinds = {k["id"]: k["service"] for k in keys}
    assert (kinds[service_id], kinds[normal_id]) == (True, False)


def test_a_key_without_a_team_is_recorded_under_unknown(gateway):
    key_id, key = new_key(gateway, team=None)
    chat(gateway, key)
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert event["team"] == "unknown"


# --- why a request was refused -----------------------------------------------------------------

REFUSALS = [
    pytest.param({"model": "no-such-model"}, 404, "model_not_found", id="model_not_found"),
    pytest.param({"messages": []}, 400, "invalid_request", id="invalid_request"),
    pytest.param({"stream": "yes"}, 400, "invalid_request", id="invalid_stream"),
    pytest.param({"metadata": "x"}, 400, "invalid_attribution", id="invalid_attribution"),
]


@pytest.mark.parametrize(("body", "status", "code"), REFUSALS)
def test_every_refused_request_records_its_error_code(gateway, body, status, code):
    key_id, key = new_key(gateway)
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "vllm-model", "messages": MESSAGES, **body},
    )
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["error_code"], event["http_status"]) == (code, status)
    assert (event["user"], event["team"]) == ("u-1", "payments")  # refusals are billed too


def test_invalid_json_and_oversized_bodies_record_their_codes(gateway):
    key_id, key = new_key(gateway)
    auth = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    url = f"{gateway.url}/v1/chat/completions"
    assert httpx.post(url, headers=auth, content=b"{not json").status_code == 400
    assert httpx.post(url, headers=auth, content=b"x" * 300_000).status_code == 413
    events = gateway.wait_events(2, "key_id = :k", k=key_id)
    assert sorted(e["error_code"] for e in events) == ["invalid_json", "request_too_large"]
    assert all(e["team"] == "payments" for e in events)


def test_successful_requests_have_no_error_code(gateway):
    key_id, key = new_key(gateway)
    chat(gateway, key)
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["status"], event["error_code"]) == ("ok", "")


def usage(gateway: Gateway, group_by: str, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{gateway.url}/admin/usage",
        params={"group_by": group_by, **params},
        headers=gateway.admin_headers,
    )
    assert r.status_code == 200, r.text
    return r.json()["rows"]


@pytest.mark.parametrize(
    "window", [{}, {"since": "2000-01-01T00:00:30"}], ids=["rollups", "events"]
)
def test_usage_groups_by_error_code_and_counts_only_token_spending_unpriced(gateway, window):
    key_id, key = new_key(gateway, team="t-errors")
    url = f"{gateway.url}/v1/chat/completions"
    for _ in range(2):  # refused before any token: no cost, not unpriced
        body = {"model": "nope", "messages": MESSAGES}
        httpx.post(url, headers={"Authorization": f"Bearer {key}"}, json=body)
    chat(gateway, key, model="compat-model")  # spends tokens, has no price: unpriced
    chat(gateway, key)
    gateway.wait_events(4, "key_id = :k", k=key_id)
    rows = {
        r["error_code"]: r
        for r in usage(gateway, "key_id,error_code", **window)
        if r["key_id"] == key_id
    }
    assert {c: r["requests"] for c, r in rows.items()} == {"model_not_found": 2, "": 2}
    assert rows["model_not_found"]["unpriced_requests"] == 0
    assert rows[""]["unpriced_requests"] == 1


def test_team_totals_equal_the_sum_of_their_keys(gateway):
    keys = [new_key(gateway, team=team) for team in ("t-sum-a", "t-sum-a", "t-sum-b")]
    for n, (key_id, key) in enumerate(keys, start=1):
        for _ in range(n):
            chat(gateway, key, model="claude")
        gateway.wait_events(n, "key_id = :k", k=key_id)
    teams = {r["team"]: r for r in usage(gateway, "team")}
    by_key = usage(gateway, "team,key_id")
    for team in ("t-sum-a", "t-sum-b"):
        mine = [r for r in by_key if r["team"] == team]
        for col in ("requests", "input_tokens", "output_tokens", "cost_micro_usd"):
            assert teams[team][col] == sum(r[col] for r in mine), (team, col)
    assert teams["t-sum-a"]["requests"] == 3
    assert teams["t-sum-a"]["cost_micro_usd"] > 0


def test_usage_groups_by_end_user(gateway):
    key_id, key = new_key(gateway, team="t-end-users")
    for who in ("ann", "ann", "ben"):
        chat(gateway, key, headers={"X-Meter-User": who})
    gateway.wait_events(3, "key_id = :k", k=key_id)
    rows = [r for r in usage(gateway, "key_id,user,end_user") if r["key_id"] == key_id]
    assert {(r["user"], r["end_user"]): r["requests"] for r in rows} == {
        ("u-1", "ann"): 2,
        ("u-1", "ben"): 1,
    }


# --- open mode ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_gateway(fakes, tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(
        tmp_path_factory.mktemp("open") / "tm.db",
        {"models": backend_models(fakes), "auth": {"required": False}},
    ).start()
    yield gw
    gw.stop()


def test_open_mode_bills_the_declared_user_as_before(open_gateway):
    chat(open_gateway, "no-key", headers={"X-Meter-User": "u-9", "X-Meter-Session": "open-1"})
    [event] = open_gateway.wait_events(1, "session = :s", s="open-1")
    assert (event["key_id"], event["user"], event["user_source"]) == (
        "anonymous",
        "u-9",
        "declared",
    )
    assert event["team"] == "unknown"


def test_open_mode_with_a_key_still_lets_the_client_declare(open_gateway):
    key_id, key = new_key(open_gateway)
    chat(open_gateway, key, headers={"X-Meter-User": "u-2"})
    [event] = open_gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["user"], event["team"], event["user_source"]) == ("u-2", "payments", "declared")
