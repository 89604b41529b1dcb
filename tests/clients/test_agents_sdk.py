"""The OpenAI Agents SDK in its default Responses mode: an agent with one function tool,
streaming and not, and with a structured ``output_type``, on an on-prem and a Claude alias; each
model call's ledger row equals what the fake reported."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool
from openai import AsyncOpenAI
from pydantic import BaseModel

from tests.proxy.gateway.fake_usage import ledger_usage, reported_usage, requests_for
from tests.support import Gateway

FAKES = {"vllm-model": "vllm", "claude": "anthropic", "azure-mistral": "azure"}
calls: list[str] = []


@function_tool
def lookup(query: str) -> str:
    """Look a word up."""
    calls.append(query)
    return f"{query} means 'pretend'"


class Answer(BaseModel):
    word: str
    confidence: int


def run_agent(
    gateway: Gateway,
    key: str,
    model: str,
    prompt: str,
    *,
    session: str,
    stream: bool,
    output_type: Any = None,
) -> Any:
    async def go() -> Any:
        client = AsyncOpenAI(
            base_url=gateway.url + "/v1",
            api_key=key,
            max_retries=0,
            default_headers={"X-Meter-Session": session},
        )
        agent = Agent(
            name="librarian",
            instructions="Use the lookup tool, then answer.",
            tools=[lookup],
            output_type=output_type,
            model=OpenAIResponsesModel(model=model, openai_client=client),
        )
        config = RunConfig(tracing_disabled=True)
        if not stream:
            return (await Runner.run(agent, prompt, run_config=config)).final_output
        result = Runner.run_streamed(agent, prompt, run_config=config)
        kinds = [event.type async for event in result.stream_events()]
        assert "raw_response_event" in kinds
        return result.final_output

    return asyncio.run(go())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", FAKES)
def test_agent_calls_its_tool_then_answers(gateway, api_key, fakes, session_id, model, stream):
    marker = f"define {uuid.uuid4().hex[:10]}"
    before = len(calls)
    output = run_agent(gateway, api_key, model, marker, session=session_id, stream=stream)
    assert calls[before:] == ["simulated"]
    assert output.startswith("Simulated reply")
    assert_metered_as_reported(gateway, fakes[FAKES[model]], marker, session_id, turns=2)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", FAKES)
def test_agent_with_output_type_gets_a_parsed_object(
    gateway, api_key, fakes, session_id, model, stream
):
    marker = f"rate {uuid.uuid4().hex[:10]}"
    output = run_agent(
        gateway, api_key, model, marker, session=session_id, stream=stream, output_type=Answer
    )
    assert output == Answer(word="simulated", confidence=1)
    assert_metered_as_reported(gateway, fakes[FAKES[model]], marker, session_id, turns=2)


def assert_metered_as_reported(
    gateway: Gateway, fake: Any, marker: str, session: str, *, turns: int
) -> None:
    sent = requests_for(fake, marker)
    assert len(sent) == turns
    rows = gateway.wait_events(turns, "session = :s", s=session)
    assert [ledger_usage(r) for r in rows] == [reported_usage(fake, r) for r in sent]
    assert all(r["status"] == "ok" and r["usage_source"] == "upstream" for r in rows)
