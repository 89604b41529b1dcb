"""LangChain's ChatAnthropic through the gateway: on a Claude alias (native) and on OpenAI-shaped
aliases (translated), plain, streamed and with a bound tool; each call metered once."""

from __future__ import annotations

import uuid

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.tools import tool

from tests.support import Gateway


@tool
def search(query: str) -> str:
    """Search the docs."""
    return "found"


def chat(gateway: Gateway, model: str, session: str) -> ChatAnthropic:
    key = gateway.create_key(user="lc-user")
    return ChatAnthropic(  # type: ignore[call-arg]
        model=model,
        base_url=gateway.url,
        api_key=key,
        max_tokens=64,
        max_retries=0,
        default_headers={"X-Meter-Session": session},
    )


@pytest.mark.parametrize("model", ["claude", "vllm-model", "azure-mistral", "tgi-model"])
def test_invoke_and_stream(gateway, model):
    session = "lc-" + uuid.uuid4().hex[:10]
    llm = chat(gateway, model, session)
    answer = llm.invoke("Say hello")
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata and answer.usage_metadata["output_tokens"] > 0
    streamed = "".join(str(c.content) for c in llm.stream("Say hello"))
    assert streamed
    first, second = gateway.wait_events(2, "session = :s", s=session)
    assert (first["stream"], second["stream"]) == (False, True)
    assert first["input_tokens"] == answer.usage_metadata["input_tokens"]
    assert {e["user"] for e in (first, second)} == {"lc-user"}


@pytest.mark.parametrize("model", ["claude", "vllm-model"])
def test_bound_tool_is_called(gateway, model):
    session = "lc-" + uuid.uuid4().hex[:10]
    answer = chat(gateway, model, session).bind_tools([search]).invoke("find the docs")
    [call] = answer.tool_calls
    assert call["name"] == "search" and call["args"] == {"query": "simulated"}
    [event] = gateway.wait_events(1, "session = :s", s=session)
    assert event["status"] == "ok"
