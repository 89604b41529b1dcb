"""Fake Anthropic Messages API upstream (`/v1/messages`, count_tokens, models)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.simulated.anthropic_wire import MessagePlan, error_body, message_body, stream_script
from proxy.simulated.directives import (
    AGENT_TOOLS,
    DirectiveError,
    Directives,
    Reply,
    generate_reply,
    message_texts,
    parse_directives,
    prompt_tokens,
)
from proxy.simulated.recording import FakeApp, exchange_of
from proxy.simulated.responses import SSE_MEDIA, PacedResponse, json_bytes, new_id
from proxy.simulated.schema_sample import json_reply, tool_input

_DEFAULT_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5")
# From this API version on, sampling parameters are rejected outright (even at defaults).
_STRICT_VERSION = "2026-10-21"
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


class _Rejected(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(request: Request, status: int, message: str, delay: float = 0.0) -> Response:
    exchange = exchange_of(request.scope)
    body = error_body(status, message, exchange.request_id if exchange else None)
    return PacedResponse([json_bytes(body)], status_code=status, delay=delay)


def _scripted_error(request: Request, directives: Directives) -> Response | None:
    if directives.status is None:
        return None
    message = f"Simulated upstream error {directives.status}"
    return _error(request, directives.status, message, directives.delay)


class _AnthropicFake:
    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key

    def check_access(self, request: Request) -> str:
        """The anthropic-version in force, once the caller is authenticated."""
        # SDKs since 2026-10-21 send the key as a bearer token; x-api-key wins if both are set.
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = request.headers.get("x-api-key") or (token if scheme.lower() == "bearer" else None)
        if self.api_key is not None and key != self.api_key:
            raise _Rejected("invalid x-api-key" if key else "x-api-key header is required", 401)
        version = request.headers.get("anthropic-version")
        if not version:
            raise _Rejected("anthropic-version: header is required")
        return version

    async def admit(self, request: Request) -> dict[str, Any]:
        version = self.check_access(request)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise _Rejected(f"Invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise _Rejected("Request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Rejected("messages: at least one message is required")
        if version >= _STRICT_VERSION:
            for name in _SAMPLING_FIELDS:
                if name in body:
                    raise _Rejected(f"{name}: Extra inputs are not permitted")
        return body

    async def messages(self, request: Request) -> Response:
        try:
            body = await self.admit(request)
            directives = parse_directives(_texts(body))
            if (scripted := _scripted_error(request, directives)) is not None:
                return scripted
            plan = _plan(body, directives)
        except (_Rejected, DirectiveError) as exc:
            return _error(request, getattr(exc, "status", 400), str(exc))
        msg_id = new_id("msg_")
        if not body.get("stream"):
            cut = None if directives.cut_after is None else 0
            frames = [json_bytes(message_body(plan, msg_id))]
            return PacedResponse(frames, delay=directives.delay, abort_after=cut)
        script = stream_script(plan, msg_id)
        cut = None if directives.cut_after is None else script.cut_position(directives.cut_after)
        return PacedResponse(
            script.frames,
            media_type=SSE_MEDIA,
            streaming=True,
            delay=directives.delay,
            chunk_delay=directives.chunk_delay,
            abort_after=cut,
        )

    async def count_tokens(self, request: Request) -> Response:
        try:
            body = await self.admit(request)
            directives = parse_directives(_texts(body))
        except (_Rejected, DirectiveError) as exc:
            return _error(request, getattr(exc, "status", 400), str(exc))
        if (scripted := _scripted_error(request, directives)) is not None:
            return scripted
        tokens = prompt_tokens(_texts(body), len(body["messages"]))
        return PacedResponse([json_bytes({"input_tokens": tokens})], delay=directives.delay)

    async def list_models(self, request: Request) -> Response:
        try:
            self.check_access(request)
        except _Rejected as exc:
            return _error(request, exc.status, str(exc))
        created = "2025-09-29T00:00:00Z"
        data = [
            {"type": "model", "id": model, "display_name": model, "created_at": created}
            for model in _DEFAULT_MODELS
        ]
        page = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
        }
        return PacedResponse([json_bytes(page)])


def _texts(body: dict[str, Any]) -> list[str]:
    return message_texts(body.get("messages"), body.get("system"))


def _plan(body: dict[str, Any], directives: Directives) -> MessagePlan:
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _Rejected("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _Rejected(f"max_tokens: must be an integer >= 1, got {max_tokens!r}")
    stops = [s for s in body.get("stop_sequences") or () if isinstance(s, str)]
    model = str(body.get("model") or _DEFAULT_MODELS[0])
    tool_name = _pick_tool(body)
    return MessagePlan(
        model=model,
        prompt_tokens=prompt_tokens(_texts(body), len(body["messages"])),
        directives=directives,
        reply=_structured_reply(body)
        or generate_reply("anthropic", model, directives, max_tokens, stops),
        tool_name=tool_name,
        tool_input=tool_input(_input_schema(body, tool_name)),
    )


def _input_schema(body: dict[str, Any], name: str | None) -> Any:
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("name") == name:
            return tool.get("input_schema")
    return None


def _structured_reply(body: dict[str, Any]) -> Reply | None:
    """Native structured output (``output_config.format``): the reply is the schema's JSON."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _Rejected("output_config.format: type json_schema with a schema is required")
    return json_reply(fmt["schema"])


def _pick_tool(body: dict[str, Any]) -> str | None:
    """Name of the tool to call, or None to answer with text."""
    tools = body.get("tools")
    raw_choice = body.get("tool_choice")
    choice: dict[str, Any] = raw_choice if isinstance(raw_choice, dict) else {}
    if not isinstance(tools, list) or not tools or choice.get("type") == "none":
        return None
    last = body["messages"][-1]
    content = last.get("content") if isinstance(last, dict) else None
    if isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    ):
        # A tool must be called: the next one not called yet (agents' final-output tools).
        return _next_uncalled(tools, body["messages"]) if choice.get("type") == "any" else None
    if choice.get("type") == "tool" and isinstance(choice.get("name"), str):
        return str(choice["name"])
    for tool in tools:
        name = tool.get("name") if isinstance(tool, dict) else None
        if isinstance(name, str) and name not in AGENT_TOOLS:
            return name
    return None


def _next_uncalled(tools: list[Any], messages: list[Any]) -> str | None:
    called: set[Any] = set()
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list) and msg.get("role") == "assistant":
            called |= {b.get("name") for b in content if isinstance(b, dict)}
    for tool in tools:
        name = tool.get("name") if isinstance(tool, dict) else None
        if isinstance(name, str) and name not in called:
            return name
    return None


def create_anthropic_app(api_key: str | None = None) -> Starlette:
    """Fake Anthropic upstream; every response carries a `request-id` header."""
    fake = _AnthropicFake(api_key)
    routes = [
        Route("/v1/messages", fake.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", fake.count_tokens, methods=["POST"]),
        Route("/v1/models", fake.list_models, methods=["GET"]),
    ]
    return FakeApp(routes, request_id_header="request-id")
