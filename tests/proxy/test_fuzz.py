"""Hostile input never gets a 5xx, and every authenticated request leaves exactly one event.

Hypothesis generates request bodies and admin inputs against the real gateway on a loopback
port (the simulated upstreams behind it), with a fixed budget and a fixed seed so CI runs the
same cases every time. The cases the issue found by hand are pinned as explicit examples.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.simulated import FakeServer
from tests.conftest import backend_models
from tests.support import Gateway, pg_database

BUDGET = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "tool_result", "x"]), "text": json_values}
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", "developer", "x"]),
            "content": st.text(max_size=30) | st.lists(parts, max_size=3) | json_values,
        },
        optional={"tool_calls": json_values, "tool_call_id": json_values},
    ),
    min_size=1,
    max_size=3,
)
OPTIONAL = ["stop", "tools", "tool_choice", "stream", "max_tokens", "metadata", "user", "n",
            "stream_options", "response_format", "temperature", "parallel_tool_calls"]  # fmt: skip
models = st.sampled_from(["vllm-model", "claude", "azure-mistral", "tgi-model"]) | json_values
chat_bodies = st.fixed_dictionaries(
    {"model": models, "messages": messages | json_values},
    optional={name: json_values for name in OPTIONAL},
)


def nested(depth: int, model: str) -> bytes:
    """A chat body whose content is ``depth`` nested arrays (built as text: encoders stop
    earlier than parsers do, which is the point)."""
    content = "[" * depth + '"deep"' + "]" * depth
    return (f'{{"model": "{model}", "max_tokens": 5, "messages": '
            f'[{{"role": "user", "content": {content}}}]}}').encode()  # fmt: skip


class Tally:
    """Authenticated API requests sent per session, to compare with the events recorded."""

    def __init__(self) -> None:
        self.session = "fuzz-" + uuid.uuid4().hex[:10]
        self.sent = 0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(
    request: pytest.FixtureRequest, fakes: dict[str, FakeServer], tmp_path_factory
) -> Iterator[Gateway]:
    db = tmp_path_factory.mktemp("fuzz") / "tm.db"
    config: dict[str, Any] = {"models": backend_models(fakes)}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            config["storage"] = {
                "url": stack.enter_context(pg_database(request.getfixturevalue("pg_admin_url")))
            }
        gw = Gateway(db, config).start()
        stack.callback(gw.stop)
        yield gw


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.create_key(user="fuzzer")


@pytest.fixture(scope="module")
def tally(gateway: Gateway) -> Tally:
    return Tally()


def post(gateway: Gateway, key: str, tally: Tally, path: str, body: Any) -> httpx.Response:
    tally.sent += 1
    headers = {"Authorization": f"Bearer {key}", "X-Meter-Session": tally.session}
    return httpx.post(gateway.url + path, json=body, headers=headers, timeout=30)


def assert_shaped(r: httpx.Response, *, anthropic: bool) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        body = r.json()
        if anthropic:
            assert body["type"] == "error" and isinstance(body["error"]["message"], str)
        else:
            assert isinstance(body["error"]["message"], str)


@BUDGET
@given(body=chat_bodies)
@example(body={"model": "claude", "messages": [{"role": "user", "content": "hi"}], "stop": 5})
@example(body={"model": "claude", "messages": [{"role": "user", "content": "hi"}], "tools": {}})
@example(
    body={"model": "claude", "messages": [{"role": "assistant", "content": "a", "tool_calls": 3}]}
)
@example(
    body={
        "model": "vllm-model",
        "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}],
    }
)
@example(body={"model": "a\u0000b", "messages": [{"role": "user", "content": "hi"}]})
def test_chat_completions_never_5xx(gateway, key, tally, body):
    assert_shaped(post(gateway, key, tally, "/v1/chat/completions", body), anthropic=False)


@BUDGET
@given(body=chat_bodies)
def test_messages_never_5xx(gateway, key, tally, body):
    assert_shaped(post(gateway, key, tally, "/v1/messages", body), anthropic=True)


@BUDGET
@given(body=st.fixed_dictionaries({"model": models, "input": json_values}))
def test_embeddings_never_5xx(gateway, key, tally, body):
    assert_shaped(post(gateway, key, tally, "/v1/embeddings", body), anthropic=False)


@pytest.mark.parametrize("depth", [200, 254, 255, 300, 1000, 1023, 1024, 5000])
@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/chat/completions", "vllm-model"),
        ("/v1/chat/completions", "claude"),
        ("/v1/messages", "claude"),
    ],
)
def test_deeply_nested_json_is_a_4xx(gateway, key, tally, depth, path, model):
    tally.sent += 1
    r = httpx.post(
        gateway.url + path,
        content=nested(depth, model),
        headers={
            "Authorization": f"Bearer {key}",
            "X-Meter-Session": tally.session,
            "content-type": "application/json",
        },
    )
    assert_shaped(r, anthropic=path == "/v1/messages")


@pytest.mark.parametrize("model", ["vllm-model", "claude"])
def test_a_body_too_deep_to_forward_is_the_clients_error_not_the_deployments(gateway, key, model):
    """Recorded as the 400 the client got, and no failure of the deployment: a client must not
    open a deployment's circuit breaker with bodies that never reached it."""
    session = "deep-" + uuid.uuid4().hex[:10]
    headers = {
        "Authorization": f"Bearer {key}",
        "X-Meter-Session": session,
        "content-type": "application/json",
    }
    for _ in range(6):  # more than the breaker's failures to open
        r = httpx.post(
            gateway.url + "/v1/chat/completions", content=nested(300, model), headers=headers
        )
        assert r.status_code == 400
    events = gateway.wait_events(6, "session = :s", s=session)
    outcomes = {(e["status"], e["http_status"], e["error_code"]) for e in events}
    assert outcomes == {("client_error", 400, "invalid_request")}
    breaker = gateway.app.state.runtime.router.breakers[events[0]["deployment"]]
    assert breaker.failures == 0


def test_every_fuzzed_request_left_exactly_one_event(gateway, tally):
    """Runs after the fuzzers above (file order): one event per authenticated request."""
    assert tally.sent > 300
    gateway.wait_events(tally.sent, "session = :s", s=tally.session)


# any text as one path segment, percent-encoded (%00, %2F and lone surrogates' bytes included)
path_text = st.text(max_size=30).map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe=""))


@BUDGET
@given(name=path_text)
@example(name="9999-12.csv")
@example(name="9999-12.xlsx")
@example(name="0000-00.parquet")
@example(name="%00.csv")
def test_admin_exports_never_5xx(gateway, name):
    r = httpx.get(f"{gateway.url}/admin/exports/{name}", headers=gateway.admin_headers)
    assert r.status_code < 500, r.text[:300]


@BUDGET
@given(key_id=path_text)
@example(key_id="%00")
@example(key_id="key_%00abc")
def test_admin_key_revocation_never_5xx(gateway, key_id):
    r = httpx.delete(f"{gateway.url}/admin/keys/{key_id}", headers=gateway.admin_headers)
    assert r.status_code < 500, r.text[:300]


@BUDGET
@given(
    body=json_values
    | st.dictionaries(st.sampled_from(["user", "team", "agent", "use_case"]), json_values)
)
@example(body={"user": "\ud800"})
@example(body={"user": "ok", "team": "\udfff"})
def test_admin_key_creation_never_5xx(gateway, body):
    content = json.dumps(body).encode()  # ASCII escapes: a lone surrogate goes as \\ud800
    r = httpx.post(
        gateway.url + "/admin/keys",
        content=content,
        headers={**gateway.admin_headers, "content-type": "application/json"},
    )
    assert r.status_code < 500, r.text[:300]


@BUDGET
@given(
    params=st.dictionaries(
        st.sampled_from(["group_by", "since", "until", "model", "fresh"]), st.text(max_size=30)
    ),
    path=st.sampled_from(["/admin/usage", "/admin/compare"]),
)
@example(params={"model": "\x00"}, path="/admin/compare")
@example(params={"since": "9999-12-31T23:59:59-10:00"}, path="/admin/usage")
@example(params={"until": "0001-01-01T00:00:00+10:00"}, path="/admin/compare")
def test_admin_reports_never_5xx(gateway, params, path):
    r = httpx.get(gateway.url + path, params=params, headers=gateway.admin_headers)
    assert r.status_code < 500, r.text[:300]
