"""The fake upstreams, driven over real loopback sockets by the official SDKs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import TextBlock, ToolParam, ToolUseBlock
from openai.types.chat import ChatCompletionFunctionToolParam

from proxy.simulated import FakeServer, create_anthropic_app, create_openai_app
from proxy.simulated.directives import DirectiveError, parse_directives

VLLM_KEY, TGI_KEY, AZURE_KEY, ANTHROPIC_KEY = "vllm-key", "tgi-key", "azure-key", "sk-ant-fake"
AZURE_VERSION = {"api-version": "2024-05-01-preview"}
MODEL = "test-model"
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
ANTHROPIC_TOOL: ToolParam = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}


def reply(flavor: str, model: str = MODEL, words: int = 12) -> str:
    vocabulary = f"Simulated reply from the {flavor} backend for model {model}.".split()
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(words))


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before timeout"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def vllm() -> Iterator[FakeServer]:
    with FakeServer(create_openai_app("vllm", api_key=VLLM_KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def tgi() -> Iterator[FakeServer]:
    with FakeServer(create_openai_app("tgi", api_key=TGI_KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeServer]:
    with FakeServer(create_openai_app("azure", api_key=AZURE_KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeServer]:
    with FakeServer(create_anthropic_app(api_key=ANTHROPIC_KEY)) as server:
        yield server


@pytest.fixture(scope="module", params=["vllm", "tgi"])
def backend(request: pytest.FixtureRequest) -> tuple[str, openai.OpenAI]:
    """The two servers reached at `/v1` with a plain OpenAI client."""
    flavor: str = request.param
    server: FakeServer = request.getfixturevalue(flavor)
    key = VLLM_KEY if flavor == "vllm" else TGI_KEY
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    request.addfinalizer(client.close)
    return flavor, client


@pytest.fixture(scope="module")
def vllm_client(vllm: FakeServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vllm.url + "/v1", api_key=VLLM_KEY, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def azure_client(azure: FakeServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=azure.url + "/models",
        api_key=AZURE_KEY,
        default_query=AZURE_VERSION,
        default_headers={"extra-parameters": "drop"},
        max_retries=0,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def claude_client(claude: FakeServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=claude.url, api_key=ANTHROPIC_KEY, max_retries=0) as client:
        yield client


# --- directives --------------------------------------------------------------------


def test_later_directives_override_earlier_ones() -> None:
    assert parse_directives(["[[fake:words=3]]", "x [[fake:words=5]]"]).words == 5


def test_unknown_directive_is_rejected() -> None:
    with pytest.raises(DirectiveError, match="unknown fake directive"):
        parse_directives(["[[fake:wrods=3]]"])


# --- vLLM and TGI through the OpenAI SDK ---------------------------------------------


def test_reply_is_deterministic(backend: tuple[str, openai.OpenAI]) -> None:
    flavor, client = backend
    completion = client.chat.completions.create(model=MODEL, messages=user("hello there"))
    assert completion.choices[0].message.content == reply(flavor)


def test_usage_counts_words_plus_one_per_message(backend: tuple[str, openai.OpenAI]) -> None:
    _, client = backend
    completion = client.chat.completions.create(model=MODEL, messages=user("hello there"))
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 12)


def test_stream_without_include_usage_carries_no_usage(backend: tuple[str, openai.OpenAI]) -> None:
    _, client = backend
    chunks = list(client.chat.completions.create(model=MODEL, messages=user("hi"), stream=True))
    assert [chunk.usage for chunk in chunks] == [None] * len(chunks)


def test_stream_content_arrives_one_word_per_chunk(backend: tuple[str, openai.OpenAI]) -> None:
    flavor, client = backend
    stream = client.chat.completions.create(model=MODEL, messages=user("hi"), stream=True)
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert pieces == reply(flavor).replace(" ", "\0 ").split("\0")


def test_stream_with_include_usage_ends_with_usage_chunk(
    backend: tuple[str, openai.OpenAI],
) -> None:
    _, client = backend
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=user("hi"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 12


def test_tools_produce_a_call_to_the_first_tool(backend: tuple[str, openai.OpenAI]) -> None:
    _, client = backend
    completion = client.chat.completions.create(
        model=MODEL,
        messages=user("weather?"),
        tools=[WEATHER_TOOL],
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [
        (c.function.name, json.loads(c.function.arguments)) for c in calls if c.type == "function"
    ] == [("get_weather", {"query": "simulated"})]


def test_tool_call_stream_reassembles_arguments(backend: tuple[str, openai.OpenAI]) -> None:
    _, client = backend
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user("weather?"),
        tools=[WEATHER_TOOL],
        stream=True,
    )
    arguments = "".join(
        call.function.arguments or ""
        for chunk in stream
        for call in (chunk.choices[0].delta.tool_calls or [] if chunk.choices else [])
        if call.function is not None
    )
    assert json.loads(arguments) == {"query": "simulated"}


def test_tool_result_gets_a_text_answer(backend: tuple[str, openai.OpenAI]) -> None:
    _, client = backend
    messages = [
        *user("weather?"),
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    completion = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER_TOOL],
    )
    assert completion.choices[0].finish_reason == "stop"


def test_n_choices_multiply_completion_tokens(backend: tuple[str, openai.OpenAI]) -> None:
    _, client = backend
    completion = client.chat.completions.create(model=MODEL, messages=user("hi"), n=2)
    assert completion.usage is not None and completion.usage.completion_tokens == 24


def test_stop_sequence_ends_the_reply_before_it(backend: tuple[str, openai.OpenAI]) -> None:
    flavor, client = backend
    completion = client.chat.completions.create(model=MODEL, messages=user("hi"), stop=["backend"])
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == (reply(flavor, words=5), "stop")


def test_max_tokens_truncates_with_length(backend: tuple[str, openai.OpenAI]) -> None:
    _, client = backend
    completion = client.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=3)
    assert completion.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_status_directive_raises_matching_sdk_error(
    backend: tuple[str, openai.OpenAI], status: int, error: type[openai.APIStatusError]
) -> None:
    """The SDK's error class follows the status; the fake's message is in the body it sent (the
    SDK's own rendering of the message differs between releases and flavours' error shapes)."""
    _, client = backend
    with pytest.raises(error) as caught:
        client.chat.completions.create(model=MODEL, messages=user(f"[[fake:status={status}]]"))
    assert caught.value.status_code == status
    assert f"Simulated upstream error {status}" in caught.value.response.text


def test_models_are_listed(backend: tuple[str, openai.OpenAI]) -> None:
    flavor, client = backend
    assert [model.id for model in client.models.list()] == [f"simulated-{flavor}"]


def test_wrong_key_is_rejected(vllm: FakeServer) -> None:
    with (
        openai.OpenAI(base_url=vllm.url + "/v1", api_key="wrong", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()


def test_vllm_embeddings_are_deterministic(vllm_client: openai.OpenAI) -> None:
    first = vllm_client.embeddings.create(model=MODEL, input=["a b", "c"])
    second = vllm_client.embeddings.create(model=MODEL, input=["a b", "c"])
    assert [d.embedding for d in first.data] == [d.embedding for d in second.data]


def test_vllm_embeddings_count_words(vllm_client: openai.OpenAI) -> None:
    result = vllm_client.embeddings.create(model=MODEL, input=["a b", "c"])
    assert (result.usage.prompt_tokens, len(result.data[0].embedding)) == (3, 8)


def test_tgi_has_no_embeddings(tgi: FakeServer) -> None:
    with (
        openai.OpenAI(base_url=tgi.url + "/v1", api_key=TGI_KEY, max_retries=0) as client,
        pytest.raises(openai.NotFoundError),
    ):
        client.embeddings.create(model=MODEL, input="hello")


def test_vllm_rejects_stream_options_without_stream(vllm_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stream=True"):
        vllm_client.chat.completions.create(
            model=MODEL, messages=user("hi"), stream_options={"include_usage": True}
        )


def test_vllm_continuous_usage_is_cumulative(vllm_client: openai.OpenAI) -> None:
    stream = vllm_client.chat.completions.create(
        model=MODEL,
        messages=user("hi [[fake:words=3]]"),
        stream=True,
        # vLLM's extension is not in the SDK's types, so it rides in extra_body.
        extra_body={"stream_options": {"include_usage": True, "continuous_usage_stats": True}},
    )
    assert [c.usage.completion_tokens for c in stream if c.usage] == [0, 1, 2, 3, 3, 3]


def test_vllm_reports_cached_and_reasoning_tokens(vllm_client: openai.OpenAI) -> None:
    completion = vllm_client.chat.completions.create(
        model=MODEL, messages=user("hi [[fake:cached=2]] [[fake:reasoning=4]]")
    )
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
    assert (
        usage.prompt_tokens_details.cached_tokens,
        usage.completion_tokens_details.reasoning_tokens,
        usage.completion_tokens,
    ) == (2, 4, 16)


def test_tgi_never_reports_usage_details(tgi: FakeServer) -> None:
    response = httpx.post(
        tgi.url + "/v1/chat/completions",
        json={"messages": user("hi [[fake:cached=2]]")},
        headers={"authorization": f"Bearer {TGI_KEY}"},
    )
    assert set(response.json()["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_tgi_usage_chunk_has_empty_id_and_no_choices(tgi: FakeServer) -> None:
    response = httpx.post(
        tgi.url + "/v1/chat/completions",
        json={"messages": user("hi"), "stream": True, "stream_options": {"include_usage": True}},
        headers={"authorization": f"Bearer {TGI_KEY}"},
    )
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    usage_chunk = json.loads(events[-2])
    assert (usage_chunk["id"], usage_chunk["choices"]) == ("", [])


# --- Azure AI inference --------------------------------------------------------------


def test_azure_echoes_the_requested_model(azure_client: openai.OpenAI) -> None:
    completion = azure_client.chat.completions.create(model="mistral-small", messages=user("hi"))
    assert completion.model == "mistral-small"


def test_azure_drop_mode_ignores_extra_fields(azure_client: openai.OpenAI) -> None:
    completion = azure_client.chat.completions.create(model=MODEL, messages=user("hi"), user="u1")
    assert completion.choices[0].message.content == reply("azure")


def test_azure_stream_has_usage_only_on_finishing_chunk(azure_client: openai.OpenAI) -> None:
    stream = azure_client.chat.completions.create(model=MODEL, messages=user("hi"), stream=True)
    with_usage = [c.choices[0].finish_reason for c in stream if c.usage is not None]
    assert with_usage == ["stop"]


def test_azure_embeddings(azure_client: openai.OpenAI) -> None:
    result = azure_client.embeddings.create(model="embed-v3", input="one two three")
    assert result.usage.total_tokens == 3


def test_azure_rejects_extra_parameters_by_default(azure: FakeServer) -> None:
    response = httpx.post(
        azure.url + "/models/chat/completions",
        params=AZURE_VERSION,
        headers={"api-key": AZURE_KEY},
        json={"model": MODEL, "messages": user("hi"), "user": "u1"},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "Bad Request")


def test_azure_error_carries_ms_error_code_header(azure: FakeServer) -> None:
    response = httpx.post(
        azure.url + "/models/chat/completions",
        params=AZURE_VERSION,
        headers={"api-key": AZURE_KEY},
        json={"messages": user("hi"), "user": "u1"},
    )
    assert response.headers["x-ms-error-code"] == "Bad Request"


def test_azure_requires_api_version(azure: FakeServer) -> None:
    response = httpx.post(
        azure.url + "/chat/completions",
        headers={"api-key": AZURE_KEY},
        json={"messages": user("hi")},
    )
    assert response.status_code == 400


# --- Anthropic ------------------------------------------------------------------------


def test_anthropic_message(claude_client: anthropic.Anthropic) -> None:
    message = claude_client.messages.create(model=MODEL, max_tokens=100, messages=user("hi there"))
    texts = [block.text for block in message.content if isinstance(block, TextBlock)]
    assert (texts, message.stop_reason) == ([reply("anthropic")], "end_turn")


def test_anthropic_usage_counts_system_and_messages(claude_client: anthropic.Anthropic) -> None:
    message = claude_client.messages.create(
        model=MODEL, max_tokens=100, system="be brief", messages=user("hi there")
    )
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 12)


def test_anthropic_stream_final_usage_has_cache_fields(claude_client: anthropic.Anthropic) -> None:
    prompt = "one two three four five six seven [[fake:cache_read=3]] [[fake:cache_write=2]]"
    with claude_client.messages.stream(
        model=MODEL, max_tokens=100, messages=user(prompt)
    ) as stream:
        usage = stream.get_final_message().usage
    assert (
        usage.input_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
        usage.output_tokens,
    ) == (5, 3, 2, 12)


def test_anthropic_input_in_delta_is_applied(claude_client: anthropic.Anthropic) -> None:
    with claude_client.messages.stream(
        model=MODEL, max_tokens=100, messages=user("a b c [[fake:input_in_delta]]")
    ) as stream:
        assert stream.get_final_message().usage.input_tokens == 5


def test_anthropic_tool_use(claude_client: anthropic.Anthropic) -> None:
    message = claude_client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=user("look it up"),
        tools=[ANTHROPIC_TOOL],
    )
    inputs = [block.input for block in message.content if isinstance(block, ToolUseBlock)]
    assert (inputs, message.stop_reason) == ([{"query": "simulated"}], "tool_use")


def test_anthropic_streamed_tool_input_is_reassembled(claude_client: anthropic.Anthropic) -> None:
    with claude_client.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=user("look it up"),
        tools=[ANTHROPIC_TOOL],
    ) as stream:
        content = stream.get_final_message().content
    assert [b.input for b in content if isinstance(b, ToolUseBlock)] == [{"query": "simulated"}]


def test_anthropic_stop_sequence(claude_client: anthropic.Anthropic) -> None:
    message = claude_client.messages.create(
        model=MODEL, max_tokens=100, messages=user("hi"), stop_sequences=["the"]
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "the")


def test_anthropic_max_tokens(claude_client: anthropic.Anthropic) -> None:
    message = claude_client.messages.create(model=MODEL, max_tokens=2, messages=user("hi"))
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 2)


def test_anthropic_status_directive_raises_matching_sdk_error(
    claude_client: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.RateLimitError, match="Simulated upstream error 429"):
        claude_client.messages.create(
            model=MODEL, max_tokens=10, messages=user("[[fake:status=429]]")
        )


def test_anthropic_overloaded_status(claude_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude_client.messages.create(
            model=MODEL, max_tokens=10, messages=user("[[fake:status=529]]")
        )
    assert caught.value.status_code == 529


def test_anthropic_mid_stream_error_event(claude_client: anthropic.Anthropic) -> None:
    prompt = "[[fake:stream_error=overloaded_error]]"
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        claude_client.messages.stream(model=MODEL, max_tokens=10, messages=user(prompt)) as stream,
    ):
        stream.get_final_message()


def test_anthropic_sends_request_id_header(claude_client: anthropic.Anthropic) -> None:
    raw = claude_client.messages.with_raw_response.create(
        model=MODEL, max_tokens=10, messages=user("hi")
    )
    assert raw.headers["request-id"].startswith("req_")


def test_anthropic_requires_version_header(claude: FakeServer) -> None:
    response = httpx.post(
        claude.url + "/v1/messages",
        headers={"x-api-key": ANTHROPIC_KEY},
        json={"model": MODEL, "max_tokens": 10, "messages": user("hi")},
    )
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_requires_max_tokens(claude: FakeServer) -> None:
    response = httpx.post(
        claude.url + "/v1/messages",
        headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "messages": user("hi")},
    )
    assert response.json()["error"]["message"] == "max_tokens: Field required"


def test_anthropic_accepts_x_api_key(claude: FakeServer) -> None:
    response = httpx.post(
        claude.url + "/v1/messages",
        headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 10, "messages": user("hi")},
    )
    assert response.status_code == 200


def test_anthropic_2026_version_rejects_temperature(claude_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="temperature: Extra inputs"):
        claude_client.messages.create(
            model=MODEL, max_tokens=10, messages=user("hi"), extra_body={"temperature": 0.5}
        )


def test_anthropic_2023_version_accepts_temperature(claude: FakeServer) -> None:
    response = httpx.post(
        claude.url + "/v1/messages",
        headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 10, "temperature": 0.5, "messages": user("hi")},
    )
    assert response.status_code == 200


def test_anthropic_count_tokens(claude_client: anthropic.Anthropic) -> None:
    counted = claude_client.messages.count_tokens(model=MODEL, messages=user("one two three"))
    assert counted.input_tokens == 4


# --- connections, recording and stats ------------------------------------------------------


def test_requests_are_recorded(vllm: FakeServer, vllm_client: openai.OpenAI) -> None:
    vllm_client.chat.completions.create(model="recorded-model", messages=user("hi"))
    recorded = vllm.requests[-1]
    assert (
        recorded.path,
        recorded.headers["authorization"],
        recorded.body and recorded.body["model"],
    ) == (
        "/v1/chat/completions",
        f"Bearer {VLLM_KEY}",
        "recorded-model",
    )


def test_stats_endpoint(vllm: FakeServer) -> None:
    assert httpx.get(vllm.url + "/_fake/stats").json()["requests"] == vllm.stats.requests


def test_delay_holds_back_the_response(vllm_client: openai.OpenAI) -> None:
    started = time.monotonic()
    vllm_client.chat.completions.create(model=MODEL, messages=user("[[fake:delay=0.2]]"))
    assert time.monotonic() - started >= 0.2


def test_cut_after_drops_a_stream_mid_way(vllm: FakeServer) -> None:
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            vllm.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {VLLM_KEY}"},
            json={"messages": user("[[fake:cut_after=3]]"), "stream": True},
        ) as response,
    ):
        lines.extend(line for line in response.iter_lines() if line)
    # The role chunk, then exactly three words; no finish chunk, no [DONE].
    assert len(lines) == 4


def test_cut_after_drops_a_non_stream_request(vllm_client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        vllm_client.chat.completions.create(model=MODEL, messages=user("[[fake:cut_after=0]]"))


def test_client_disconnect_is_counted(vllm: FakeServer) -> None:
    before = vllm.stats.disconnected
    body = {"messages": user("[[fake:words=500]] [[fake:chunk_delay=0.02]]"), "stream": True}
    with (
        httpx.Client() as client,
        client.stream(
            "POST",
            vllm.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {VLLM_KEY}"},
            json=body,
        ) as response,
    ):
        chunks = response.iter_bytes()
        next(chunks)
        next(chunks)
    wait_until(lambda: vllm.stats.disconnected == before + 1)


def test_small_responses_are_not_held_back_by_nagle(vllm: FakeServer) -> None:
    headers = {"authorization": f"Bearer {VLLM_KEY}"}
    with httpx.Client(base_url=vllm.url, headers=headers) as client:
        client.get("/v1/models")
        started = time.monotonic()
        for _ in range(10):
            client.get("/v1/models")
        # Headers and body go out as two writes; without TCP_NODELAY each response
        # would wait ~40 ms for the client's delayed ACK.
        assert time.monotonic() - started < 0.3
