"""pydantic-ai (OpenAIResponsesModel) and LangChain's ChatOpenAI with ``use_responses_api``
against the gateway, on an on-prem and a Claude alias: tool calls, structured output, streaming;
each model call's ledger row equals what the fake reported."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.proxy.gateway.fake_usage import ledger_usage, reported_usage, requests_for
from tests.support import Gateway

FAKES = {"vllm-model": "vllm", "claude": "anthropic"}


class Answer(BaseModel):
    word: str
    confidence: int


def assert_metered(gateway: Gateway, fake: Any, marker: str, session: str, turns: int) -> None:
    sent = requests_for(fake, marker)
    assert len(sent) == turns
    rows = gateway.wait_events(turns, "session = :s", s=session)
    assert [ledger_usage(r) for r in rows] == [reported_usage(fake, r) for r in sent]
    assert all(r["status"] == "ok" for r in rows)


def pydantic_agent(
    gateway: Gateway, key: str, model: str, session: str, **kw: Any
) -> Agent[Any, Any]:
    provider = OpenAIProvider(base_url=gateway.url + "/v1", api_key=key)
    provider.client._custom_headers["X-Meter-Session"] = session
    agent: Agent[Any, Any] = Agent(OpenAIResponsesModel(model, provider=provider), **kw)
    return agent


@pytest.mark.parametrize("model", FAKES)
def test_pydantic_ai_responses_model_calls_a_tool_and_returns_structured_output(
    gateway, api_key, fakes, session_id, model
):
    # NativeOutput: the schema goes as text.format (the default, an output tool, is a plain tool)
    agent = pydantic_agent(gateway, api_key, model, session_id, output_type=NativeOutput(Answer))
    looked_up: list[str] = []

    @agent.tool_plain
    def lookup(query: str) -> str:
        """Look a word up."""
        looked_up.append(query)
        return "found"

    marker = f"rate {uuid.uuid4().hex[:10]}"
    result = agent.run_sync(marker)
    assert looked_up == ["simulated"]
    assert result.output == Answer(word="simulated", confidence=1)
    assert_metered(gateway, fakes[FAKES[model]], marker, session_id, turns=2)


@pytest.mark.parametrize("model", FAKES)
def test_pydantic_ai_default_output_tool_after_a_function_tool(
    gateway, api_key, fakes, session_id, model
):
    agent = pydantic_agent(gateway, api_key, model, session_id, output_type=Answer)

    @agent.tool_plain
    def lookup(query: str) -> str:
        """Look a word up."""
        return "found"

    marker = f"rate {uuid.uuid4().hex[:10]}"
    assert agent.run_sync(marker).output == Answer(word="simulated", confidence=1)
    sent = requests_for(fakes[FAKES[model]], marker)
    assert (sent[-1].body or {})["tool_choice"] in ("required", {"type": "any"})
    assert_metered(gateway, fakes[FAKES[model]], marker, session_id, turns=2)


@pytest.mark.parametrize("model", FAKES)
def test_pydantic_ai_streams_text(gateway, api_key, fakes, session_id, model):
    agent = pydantic_agent(gateway, api_key, model, session_id)
    marker = f"hello {uuid.uuid4().hex[:10]}"

    async def go() -> str:
        async with agent.run_stream(marker) as run:
            return "".join([piece async for piece in run.stream_text(delta=True)])

    assert asyncio.run(go()).startswith("Simulated reply")
    assert_metered(gateway, fakes[FAKES[model]], marker, session_id, turns=1)


def langchain(gateway: Gateway, key: str, model: str, session: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=gateway.url + "/v1",
        api_key=key,  # type: ignore[arg-type]
        use_responses_api=True,
        max_retries=0,
        default_headers={"X-Meter-Session": session},
    )


@pytest.mark.parametrize("model", FAKES)
def test_langchain_responses_invoke_stream_and_structured_output(
    gateway, api_key, fakes, session_id, model
):
    llm = langchain(gateway, api_key, model, session_id)
    marker = f"tell {uuid.uuid4().hex[:10]}"
    reply = llm.invoke([HumanMessage(marker)])
    assert reply.text.startswith("Simulated reply")
    assert reply.usage_metadata is not None
    streamed = "".join(chunk.text for chunk in llm.stream([HumanMessage(marker)]))
    assert streamed == reply.text
    structured = llm.with_structured_output(Answer).invoke([HumanMessage(marker)])
    assert structured == Answer(word="simulated", confidence=1)
    assert_metered(gateway, fakes[FAKES[model]], marker, session_id, turns=3)


@pytest.mark.parametrize("model", FAKES)
def test_langchain_tool_call_over_responses(gateway, api_key, fakes, session_id, model):
    def lookup(query: str) -> str:
        """Look a word up."""
        return "found"

    llm = langchain(gateway, api_key, model, session_id).bind_tools([lookup])
    marker = f"find {uuid.uuid4().hex[:10]}"
    reply = llm.invoke([HumanMessage(marker)])
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("lookup", {"query": "simulated"})
    ]
    assert_metered(gateway, fakes[FAKES[model]], marker, session_id, turns=1)
