"""Who a request is billed to (DESIGN.md §4.3): first match wins among headers, peers' header
aliases, body metadata, body safety_identifier / user, the key's defaults, the agent's use case,
and "unknown". Each case gets its own key, so its event is found by key_id whatever it sets.

This gateway requires keys, so a declared user pays only with a service key; the user cases run
on service keys (tests/proxy/gateway/test_chargeback.py covers who pays with normal keys)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import backend_models
from tests.support import Gateway

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
LONG = "x" * 129


def new_key(gateway: Gateway, **fields: Any) -> tuple[str, str]:
    """A fresh key through the admin API: (id, key)."""
    r = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"user": "key-user", **fields},
        headers=gateway.admin_headers,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def send(gateway: Gateway, key: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    """One chat completion through the openai SDK; body fields go in as SDK keyword arguments."""
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    return c.chat.completions.create(
        model="vllm-model", messages=MESSAGES, max_tokens=5, extra_headers=headers, **body
    )


def raw(
    gateway: Gateway,
    key: str,
    headers: dict[str, str],
    body: dict[str, Any],
    path: str = "/v1/chat/completions",
    model: str = "vllm-model",
) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}{path}",
        headers={"Authorization": f"Bearer {key}", **headers},
        json={"model": model, "messages": MESSAGES, "max_tokens": 5, **body},
    )


def case(
    field: str,
    expected: str,
    *,
    key: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    id: str,
    **body: Any,
) -> Any:
    return pytest.param(field, expected, key or {}, headers or {}, body, id=f"{field}:{id}")


PRECEDENCE = [
    # user
    case(
        "user",
        "h-user",
        id="header-beats-metadata",
        headers={"X-Meter-User": "h-user"},
        metadata={"user": "m-user"},
        safety_identifier="s-user",
        user="b-user",
    ),
    case(
        "user",
        "m-user",
        id="metadata-beats-safety_identifier",
        metadata={"user": "m-user"},
        safety_identifier="s-user",
        user="b-user",
    ),
    case(
        "user",
        "m-user",
        id="metadata.user-beats-metadata.user_id",
        metadata={"user": "m-user", "user_id": "mid-user"},
    ),
    case(
        "user",
        "mid-user",
        id="metadata.user_id-beats-safety_identifier",
        metadata={"user_id": "mid-user"},
        safety_identifier="s-user",
    ),
    case(
        "user",
        "s-user",
        id="safety_identifier-beats-user",
        safety_identifier="s-user",
        user="b-user",
    ),
    case("user", "b-user", id="body-user-beats-key-default", user="b-user"),
    case("user", "key-user", id="key-default"),
    case(
        "user",
        "m-user",
        id="empty-header-falls-through",
        headers={"X-Meter-User": ""},
        metadata={"user": "m-user"},
    ),
    case(
        "user",
        "helicone-user",
        id="peer-alias-beats-metadata",
        headers={"Helicone-User-Id": "helicone-user"},
        metadata={"user": "m-user"},
    ),
    case(
        "user",
        "h-user",
        id="x-meter-beats-peer-alias",
        headers={"Helicone-User-Id": "helicone-user", "X-Meter-User": "h-user"},
    ),
    # agent
    case(
        "agent",
        "h-agent",
        id="header-beats-metadata",
        key={"agent": "k-agent"},
        headers={"X-Meter-Agent": "h-agent"},
        metadata={"agent": "m-agent"},
    ),
    case(
        "agent",
        "m-agent",
        id="metadata-beats-key-default",
        key={"agent": "k-agent"},
        metadata={"agent": "m-agent"},
    ),
    case("agent", "k-agent", id="key-default", key={"agent": "k-agent"}),
    case("agent", "unknown", id="unknown"),
    case(
        "agent", "litellm-agent", id="peer-alias", headers={"X-LiteLLM-Agent-Id": "litellm-agent"}
    ),
    case(
        "agent",
        "h-agent",
        id="x-meter-beats-peer-alias",
        headers={"X-LiteLLM-Agent-Id": "litellm-agent", "X-Meter-Agent": "h-agent"},
    ),
    # session
    case(
        "session",
        "h-session",
        id="header-beats-metadata",
        headers={"X-Meter-Session": "h-session"},
        metadata={"session": "m-session"},
    ),
    case("session", "m-session", id="metadata", metadata={"session": "m-session"}),
    case("session", "unknown", id="unknown"),
    case(
        "session",
        "cc-session",
        id="claude-code-alias",
        headers={"X-Claude-Code-Session-Id": "cc-session"},
    ),
    case(
        "session",
        "cc-session",
        id="peer-alias-beats-metadata",
        headers={"X-Claude-Code-Session-Id": "cc-session"},
        metadata={"session": "m-session"},
    ),
    case(
        "session",
        "h-session",
        id="x-meter-beats-peer-alias",
        headers={"X-Claude-Code-Session-Id": "cc-session", "X-Meter-Session": "h-session"},
    ),
    case(
        "session",
        "helicone-session",
        id="helicone-alias",
        headers={"Helicone-Session-Id": "helicone-session"},
    ),
    # use case
    case(
        "use_case",
        "h-uc",
        id="header-beats-metadata",
        key={"use_case": "k-uc"},
        headers={"X-Meter-Use-Case": "h-uc"},
        metadata={"use_case": "m-uc"},
    ),
    case(
        "use_case",
        "m-uc",
        id="metadata-beats-key-default",
        key={"use_case": "k-uc"},
        metadata={"use_case": "m-uc"},
    ),
    case("use_case", "k-uc", id="key-default", key={"use_case": "k-uc"}),
    case(
        "use_case",
        "k-uc",
        id="key-default-beats-agent-map",
        key={"use_case": "k-uc", "agent": "claude-code"},
    ),
    case(
        "use_case",
        "m-uc",
        id="metadata-beats-agent-map",
        headers={"X-Meter-Agent": "kb-search"},
        metadata={"use_case": "m-uc"},
    ),
    case(
        "use_case", "rag", id="agent-map-from-header-agent", headers={"X-Meter-Agent": "kb-search"}
    ),
    case("use_case", "coding", id="agent-map-from-metadata-agent", metadata={"agent": "vibe"}),
    case("use_case", "coding", id="agent-map-from-key-agent", key={"agent": "claude-code"}),
    case(
        "use_case",
        "coding",
        id="agent-map-uses-the-winning-agent",
        key={"agent": "kb-search"},
        headers={"X-Meter-Agent": "claude-code"},
    ),
    case("use_case", "unknown", id="unmapped-agent", headers={"X-Meter-Agent": "other-agent"}),
    case("use_case", "unknown", id="unknown"),
]


@pytest.mark.parametrize(("field", "expected", "key_fields", "headers", "body"), PRECEDENCE)
def test_precedence(gateway, field, expected, key_fields, headers, body):
    service = {"service": True} if field == "user" else {}
    key_id, key = new_key(gateway, **key_fields, **service)
    assert send(gateway, key, headers, body).choices
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert event[field] == expected
    assert event["status"] == "ok"
    if field == "user":
        declared = expected != "key-user"
        assert event["user_source"] == ("declared" if declared else "key")
        assert event["end_user"] == (expected if declared else "unknown")


def test_all_four_fields_from_headers(gateway):
    key_id, key = new_key(gateway, agent="k-agent", use_case="k-uc")
    send(
        gateway,
        key,
        {
            "X-Meter-User": "u",
            "X-Meter-Agent": "a",
            "X-Meter-Session": "s",
            "X-Meter-Use-Case": "uc",
        },
        {},
    )
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["end_user"], event["agent"], event["session"], event["use_case"]) == (
        "u",
        "a",
        "s",
        "uc",
    )
    assert event["user"] == "key-user"  # a normal key pays whatever the client declares


def test_messages_metadata_user_id_attributes_and_reaches_anthropic(gateway, fakes):
    key_id, key = new_key(gateway)
    c = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    msg = c.messages.create(
        model="claude",
        max_tokens=20,
        messages=MESSAGES,
        metadata={"user_id": "anthropic-user"},
        extra_headers={"X-Claude-Code-Session-Id": "cc-1"},
    )
    assert msg.content
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["user"], event["end_user"], event["session"]) == (
        "key-user",
        "anthropic-user",
        "cc-1",
    )
    assert fakes["anthropic"].requests[-1].body["metadata"] == {"user_id": "anthropic-user"}


def test_128_characters_are_accepted(gateway):
    key_id, key = new_key(gateway)
    value = "y" * 128
    send(gateway, key, {"X-Meter-User": value}, {"metadata": {"agent": value}})
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["end_user"], event["agent"]) == (value, value)


# --- validation -------------------------------------------------------------------------------

INVALID = [
    pytest.param({"X-Meter-User": LONG}, {}, "X-Meter-User", id="long-user-header"),
    pytest.param({"X-Meter-Agent": LONG}, {}, "X-Meter-Agent", id="long-agent-header"),
    pytest.param({"X-Meter-Session": LONG}, {}, "X-Meter-Session", id="long-session-header"),
    pytest.param({"X-Meter-Use-Case": LONG}, {}, "X-Meter-Use-Case", id="long-use-case-header"),
    pytest.param({"X-Meter-Agent": "a\tb"}, {}, "X-Meter-Agent", id="tab-in-header"),
    pytest.param(
        {}, {"metadata": {"agent": "bell\u0007"}}, "metadata.agent", id="non-printable-metadata"
    ),
    pytest.param({}, {"metadata": {"user": LONG}}, "metadata.user", id="long-metadata"),
    pytest.param({}, {"metadata": {"session": 123}}, "metadata.session", id="int-metadata"),
    pytest.param({}, {"metadata": {"use_case": ["a"]}}, "metadata.use_case", id="list-metadata"),
    pytest.param({}, {"metadata": "agent=x"}, "metadata", id="metadata-not-an-object"),
]


@pytest.mark.parametrize(("headers", "body", "named"), INVALID)
def test_invalid_attribution_is_400_naming_the_field(gateway, api_key, headers, body, named):
    r = raw(gateway, api_key, headers, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert named.lower() in error["message"].lower()


def test_invalid_attribution_on_messages_is_anthropic_400(gateway, api_key):
    c = anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as exc:
        c.messages.create(
            model="claude", max_tokens=20, messages=MESSAGES, extra_headers={"X-Meter-Agent": LONG}
        )
    body = exc.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "X-Meter-Agent" in body["error"]["message"]


def test_invalid_attribution_via_sdk_is_bad_request(gateway, api_key):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(
            model="vllm-model", messages=MESSAGES, metadata={"agent": "bell\u0007"}
        )
    assert "metadata.agent" in exc.value.response.json()["error"]["message"]


def test_invalid_attribution_never_reaches_the_upstream(gateway, api_key, fakes):
    before = fakes["vllm"].stats.requests
    assert raw(gateway, api_key, {"X-Meter-User": LONG}, {}).status_code == 400
    assert fakes["vllm"].stats.requests == before


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"X-Meter-Session": "rejected-s"}, {"metadata": {"agent": "bell\u0007"}}),
        ({"X-Meter-User": LONG}, {}),
    ],
    ids=["bad-metadata", "bad-header"],
)
def test_request_rejected_for_attribution_is_recorded_as_client_error(gateway, headers, body):
    key_id, key = new_key(gateway)
    assert raw(gateway, key, headers, body).status_code == 400
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["status"], event["http_status"]) == ("client_error", 400)
    assert event["model"] == "vllm-model"
    assert (event["input_tokens"], event["output_tokens"]) == (0, 0)


def test_request_rejected_for_bad_metadata_keeps_header_and_key_attribution(gateway):
    key_id, key = new_key(gateway, agent="claude-code")
    r = raw(gateway, key, {"X-Meter-Session": "rejected-s"}, {"metadata": {"agent": "\u0007"}})
    assert r.status_code == 400
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["user"], event["agent"], event["session"], event["use_case"]) == (
        "key-user",
        "claude-code",
        "rejected-s",
        "coding",
    )


# --- what the upstream sees -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "upstream"),
    [
        (
            {"user": "u", "agent": "a", "session": "s", "use_case": "uc", "ticket": "T-9"},
            {"ticket": "T-9"},
        ),
        ({"user": "u", "agent": "a", "session": "s", "use_case": "uc"}, None),
        ({"ticket": "T-9"}, {"ticket": "T-9"}),
    ],
    ids=["mixed", "attribution-only", "no-attribution"],
)
def test_metadata_attribution_keys_are_stripped_upstream(
    gateway, api_key, fakes, metadata, upstream
):
    send(gateway, api_key, {}, {"metadata": metadata})
    sent = fakes["vllm"].requests[-1].body
    assert sent.get("metadata") == upstream
    if upstream is None:
        assert "metadata" not in sent


def test_metadata_attribution_keys_are_stripped_before_anthropic(gateway, api_key, fakes):
    c = anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0)
    c.messages.create(
        model="claude",
        max_tokens=20,
        messages=MESSAGES,
        metadata={"user_id": "u-1", "agent": "a", "session": "s"},
    )  # type: ignore[typeddict-unknown-key]
    assert fakes["anthropic"].requests[-1].body["metadata"] == {"user_id": "u-1"}


# --- identity values clients send by themselves -----------------------------------------------


@pytest.fixture(scope="module")
def open_gateway(fakes, tmp_path_factory):
    """No keys required: the key's defaults are empty, so the client's own identity shows."""
    db = tmp_path_factory.mktemp("open") / "tokenmeter.db"
    gw = Gateway(db, {"models": backend_models(fakes), "auth": {"required": False}}).start()
    yield gw
    gw.stop()


CC_DEVICE = "d" * 64
CC_ACCOUNT = "0b6c1d7e-3a52-4c55-9a3b-2f1e0c9d8a77"
CC_SESSION = "5f0c8a9e-1b2d-4e3f-8a7b-6c5d4e3f2a1b"
CC_JSON = f'{{"device_id":"{CC_DEVICE}","account_uuid":"{CC_ACCOUNT}","session_id":"{CC_SESSION}"}}'
CC_LEGACY = f"user_{CC_DEVICE}_account_{CC_ACCOUNT}_session_{CC_SESSION}"
CC_LEGACY_NO_ACCOUNT = f"user_{CC_DEVICE}_account__session_{CC_SESSION}"


@pytest.mark.parametrize("user_id", [CC_JSON, CC_LEGACY], ids=["json", "legacy"])
def test_claude_code_user_id_gives_session_and_agent_not_user(gateway, user_id):
    assert len(CC_JSON) > 128  # the value that used to be a 400
    key_id, key = new_key(gateway)
    c = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    msg = c.messages.create(
        model="claude", max_tokens=20, messages=MESSAGES, metadata={"user_id": user_id}
    )
    assert msg.content
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert (event["user"], event["session"], event["agent"], event["use_case"]) == (
        "key-user",
        CC_SESSION,
        "claude-code",
        "coding",
    )


@pytest.mark.parametrize(
    ("user_id", "user"),
    [(CC_JSON, CC_ACCOUNT), (CC_LEGACY, CC_ACCOUNT), (CC_LEGACY_NO_ACCOUNT, CC_DEVICE)],
    ids=["json", "legacy", "legacy-without-account"],
)
def test_claude_code_account_or_device_is_the_user_without_a_key_user(open_gateway, user_id, user):
    probe = "probe-" + uuid.uuid4().hex[:8]
    r = httpx.post(
        f"{open_gateway.url}/v1/messages",
        json={
            "model": "claude",
            "max_tokens": 5,
            "messages": MESSAGES,
            "metadata": {"user_id": user_id},
        },
        headers={"X-Meter-Agent": probe},
    )
    assert r.status_code == 200, r.text
    [event] = open_gateway.wait_events(1, "agent = :a", a=probe)
    assert (event["user"], event["session"]) == (user, CC_SESSION)


def test_claude_code_header_session_beats_user_id_session(gateway):
    key_id, key = new_key(gateway)
    r = raw(
        gateway,
        key,
        {"X-Claude-Code-Session-Id": "from-header"},
        {"metadata": {"user_id": CC_JSON}},
        path="/v1/messages",
        model="claude",
    )
    assert r.status_code == 200, r.text
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert event["session"] == "from-header"


def bounded_form(value: str) -> str:
    return value[:111] + "~" + hashlib.blake2b(value.encode(), digest_size=8).hexdigest()


LENIENT = [
    pytest.param(
        {}, {"metadata": {"user_id": LONG}}, "end_user", bounded_form(LONG), id="long-user_id"
    ),
    pytest.param(
        {},
        {"metadata": {"user_id": '{"not":"claude code"}' + "z" * 120}},
        "end_user",
        bounded_form('{"not":"claude code"}' + "z" * 120),
        id="json-user_id-of-another-client",
    ),
    pytest.param(
        {}, {"metadata": {"user_id": {"a": 1}}}, "end_user", '{"a":1}', id="object-user_id"
    ),
    pytest.param(
        {}, {"safety_identifier": LONG}, "end_user", bounded_form(LONG), id="long-safety_id"
    ),
    pytest.param({}, {"user": 42}, "end_user", "42", id="int-body-user"),
    pytest.param({}, {"user": "tab\there"}, "end_user", "tab?here", id="tab-in-body-user"),
    pytest.param({}, {"user": ["a", "b"]}, "end_user", '["a","b"]', id="list-body-user"),
    pytest.param(
        {"X-Claude-Code-Session-Id": LONG}, {}, "session", bounded_form(LONG), id="long-cc-header"
    ),
    pytest.param(
        {"Helicone-User-Id": "x" * 300},
        {},
        "end_user",
        bounded_form("x" * 300),
        id="long-peer-header",
    ),
    pytest.param({"X-LiteLLM-Agent-Id": "a\tb"}, {}, "agent", "a?b", id="tab-in-peer-header"),
]


@pytest.mark.parametrize(("headers", "body", "field", "expected"), LENIENT)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_client_identity_values_never_fail_and_are_bounded(
    gateway, headers, body, field, expected, path
):
    key_id, key = new_key(gateway)
    model = "claude" if path == "/v1/messages" else "vllm-model"
    r = raw(gateway, key, headers, body, path=path, model=model)
    assert r.status_code == 200, r.text
    [event] = gateway.wait_events(1, "key_id = :k", k=key_id)
    assert event[field] == expected
    assert len(event[field]) <= 128


def _normalized(gateway: Gateway, field: str, reason: str) -> float:
    text = httpx.get(gateway.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith("tokenmeter_identity_normalized_total{") and (
            f'field="{field}"' in line and f'reason="{reason}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    ("headers", "body", "field", "reason"),
    [
        ({}, {"metadata": {"user_id": LONG}}, "metadata.user_id", "too_long"),
        ({}, {"user": 7}, "user", "not_a_string"),
        ({}, {"safety_identifier": "a\u0007"}, "safety_identifier", "non_printable"),
        ({"X-Session-Id": LONG}, {}, "x-session-id", "too_long"),
    ],
    ids=["user_id-too-long", "user-not-a-string", "safety-non-printable", "header-too-long"],
)
def test_each_bounding_is_counted(gateway, api_key, headers, body, field, reason):
    before = _normalized(gateway, field, reason)
    assert raw(gateway, api_key, headers, body).status_code == 200
    assert _normalized(gateway, field, reason) == before + 1


def test_claude_code_user_id_is_not_counted_as_bounded(gateway, api_key):
    before = _normalized(gateway, "metadata.user_id", "too_long")
    assert raw(gateway, api_key, {}, {"metadata": {"user_id": CC_JSON}}).status_code == 200
    assert _normalized(gateway, "metadata.user_id", "too_long") == before
