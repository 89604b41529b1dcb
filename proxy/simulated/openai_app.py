"""Fake OpenAI-compatible upstreams: vLLM, Azure AI inference (Foundry) and TGI (chat, text
completions on vLLM and TGI, embeddings, models)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.simulated.completions_wire import (
    CompletionPlan,
    completion_stream_script,
    completion_text_body,
)
from proxy.simulated.directives import (
    AGENT_TOOLS,
    DirectiveError,
    Directives,
    Reply,
    count_words,
    embedding_vector,
    encode_embedding,
    generate_reply,
    message_texts,
    parse_directives,
    prompt_tokens,
)
from proxy.simulated.openai_gate import (
    AZURE_CHAT_FIELDS,
    AZURE_EMBEDDING_FIELDS,
    Gate,
    Rejected,
    error_response,
)
from proxy.simulated.openai_wire import ChatPlan, Flavor, completion_body, stream_script
from proxy.simulated.recording import FakeApp
from proxy.simulated.responses import SSE_MEDIA, PacedResponse, json_bytes, new_id
from proxy.simulated.schema_sample import json_reply, tool_input

_DEFAULT_MODELS = {"vllm": "simulated-vllm", "azure": "mistral-large-2411", "tgi": "simulated-tgi"}


def _positive_int(body: dict[str, Any], *names: str) -> int | None:
    """The first of `names` present in the body, validated as an integer >= 1."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise Rejected(f"{name} must be an integer >= 1, got {value!r}")
        return value
    return None


class _OpenAIFake:
    def __init__(self, flavor: Flavor, api_key: str | None, models: Sequence[str]) -> None:
        self.flavor: Flavor = flavor
        self.gate = Gate(flavor, api_key)
        self.models = list(models)

    def error(self, status: int, message: str, delay: float = 0.0) -> Response:
        return error_response(self.flavor, status, message, delay)

    def scripted_error(self, directives: Directives) -> Response | None:
        if directives.status is None:
            return None
        message = f"Simulated upstream error {directives.status}"
        return self.error(directives.status, message, directives.delay)

    def model_of(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        return model if isinstance(model, str) and model else self.models[0]

    async def chat(self, request: Request) -> Response:
        try:
            body = await self.gate.admit(request, AZURE_CHAT_FIELDS)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise Rejected("messages must be a non-empty list")
            directives = parse_directives(message_texts(messages))
            if (scripted := self.scripted_error(directives)) is not None:
                return scripted
            plan = self.plan(body, messages, directives)
        except (Rejected, DirectiveError) as exc:
            return self.error(getattr(exc, "status", 400), str(exc))
        if not body.get("stream"):
            cut = None if directives.cut_after is None else 0
            frames = [json_bytes(completion_body(plan))]
            return PacedResponse(frames, delay=directives.delay, abort_after=cut)
        script = stream_script(plan)
        cut = None if directives.cut_after is None else script.cut_position(directives.cut_after)
        return PacedResponse(
            script.frames,
            media_type=SSE_MEDIA,
            streaming=True,
            delay=directives.delay,
            chunk_delay=directives.chunk_delay,
            abort_after=cut,
        )

    def plan(self, body: dict[str, Any], messages: list[Any], directives: Directives) -> ChatPlan:
        options = body.get("stream_options")
        if options is not None and not body.get("stream") and self.flavor == "vllm":
            raise Rejected("Stream options can only be defined when `stream=True`.")
        options = options if isinstance(options, dict) else {}
        # Azure has no stream_options; with pass-through it is simply ignored.
        include_usage = self.flavor != "azure" and bool(options.get("include_usage"))
        if self.flavor == "azure":
            for name in ("temperature", "top_p"):
                value = body.get(name)
                if isinstance(value, int | float) and not 0 <= value <= 1:
                    raise Rejected(f"{name} must be in the range [0, 1], got {value}")
        stops = _stops(body)
        model = self.model_of(body)
        max_tokens = _positive_int(body, "max_completion_tokens", "max_tokens")
        tool_name = _pick_tool(body, messages)
        reply = _structured_reply(body.get("response_format")) or generate_reply(
            self.flavor, model, directives, max_tokens, stops
        )
        return ChatPlan(
            flavor=self.flavor,
            model=model,
            prompt_tokens=prompt_tokens(message_texts(messages), len(messages)),
            directives=directives,
            reply=reply,
            n=_positive_int(body, "n") or 1,
            tool_name=tool_name,
            tool_arguments=json.dumps(tool_input(_tool_parameters(body, tool_name))),
            include_usage=include_usage,
            continuous_usage=include_usage
            and self.flavor == "vllm"
            and bool(options.get("continuous_usage_stats")),
        )

    async def completions(self, request: Request) -> Response:
        try:
            body = await self.gate.admit(request, AZURE_CHAT_FIELDS)
            prompt = body.get("prompt")
            texts = [prompt] if isinstance(prompt, str) else prompt
            if (
                not isinstance(texts, list)
                or not texts
                or not all(isinstance(t, str) for t in texts)
            ):
                raise Rejected("prompt must be a non-empty string or list of strings")
            directives = parse_directives(texts)
            if (scripted := self.scripted_error(directives)) is not None:
                return scripted
            options = body.get("stream_options")
            if options is not None and not body.get("stream") and self.flavor == "vllm":
                raise Rejected("Stream options can only be defined when `stream=True`.")
            stop = body.get("stop")
            stops = (
                [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
            )
            model = self.model_of(body)
            max_tokens = _positive_int(body, "max_tokens")
            plan = CompletionPlan(
                model=model,
                prompt_tokens=count_words(texts),
                reply=generate_reply(self.flavor, model, directives, max_tokens, stops),
                include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
            )
        except (Rejected, DirectiveError) as exc:
            return self.error(getattr(exc, "status", 400), str(exc))
        if not body.get("stream"):
            cut = None if directives.cut_after is None else 0
            frames = [json_bytes(completion_text_body(plan))]
            return PacedResponse(frames, delay=directives.delay, abort_after=cut)
        script = completion_stream_script(plan)
        cut = None if directives.cut_after is None else script.cut_position(directives.cut_after)
        return PacedResponse(
            script.frames,
            media_type=SSE_MEDIA,
            streaming=True,
            delay=directives.delay,
            chunk_delay=directives.chunk_delay,
            abort_after=cut,
        )

    async def embeddings(self, request: Request) -> Response:
        try:
            body = await self.gate.admit(request, AZURE_EMBEDDING_FIELDS)
            inputs = _embedding_inputs(body.get("input"))
            directives = parse_directives(inputs)
        except (Rejected, DirectiveError) as exc:
            return self.error(getattr(exc, "status", 400), str(exc))
        if (scripted := self.scripted_error(directives)) is not None:
            return scripted
        tokens = count_words(inputs)
        encoding = body.get("encoding_format")
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": encode_embedding(embedding_vector(text), encoding),
            }
            for i, text in enumerate(inputs)
        ]
        payload: dict[str, Any] = {
            "id": new_id("embd-"),
            "object": "list",
            "model": self.model_of(body),
        }
        if self.flavor == "vllm":
            payload["created"] = int(time.time())
        payload["data"] = data
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        cut = None if directives.cut_after is None else 0
        return PacedResponse([json_bytes(payload)], delay=directives.delay, abort_after=cut)

    async def list_models(self, request: Request) -> Response:
        try:
            self.gate.check_access(request)
        except Rejected as exc:
            return self.error(exc.status, str(exc))
        owner = "vllm" if self.flavor == "vllm" else "huggingface"
        data = [{"id": m, "object": "model", "created": 0, "owned_by": owner} for m in self.models]
        return PacedResponse([json_bytes({"object": "list", "data": data})])

    async def model_info(self, request: Request) -> Response:
        try:
            self.gate.check_access(request)
        except Rejected as exc:
            return self.error(exc.status, str(exc))
        name = request.query_params.get("model") or self.models[0]
        info = {
            "model_name": name,
            "model_type": "chat-completion",
            "model_provider_name": "Mistral",
        }
        return PacedResponse([json_bytes(info)])


async def _health(request: Request) -> Response:
    return Response(status_code=200)


def _pick_tool(body: dict[str, Any], messages: list[Any]) -> str | None:
    """Name of the tool to call, or None to answer with text."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "tool":
        # A tool must be called: the next one not called yet (agents' final-output tools).
        return _next_uncalled(tools, messages) if choice == "required" else None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        named = choice["function"].get("name")
        if isinstance(named, str):
            return named
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name not in AGENT_TOOLS:
            return name
    return None


def _next_uncalled(tools: list[Any], messages: list[Any]) -> str | None:
    called = {
        (call.get("function") or {}).get("name")
        for msg in messages
        if isinstance(msg, dict) and msg.get("role") == "assistant"
        for call in msg.get("tool_calls") or ()
        if isinstance(call, dict)
    }
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name not in called:
            return name
    return None


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]


def _tool_parameters(body: dict[str, Any], name: str | None) -> Any:
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") == name:
            return function.get("parameters")
    return None


def _structured_reply(fmt: Any) -> Reply | None:
    """A JSON reply when the request asked for one (``response_format``)."""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return json_reply(None)
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        return json_reply(spec.get("schema") if isinstance(spec, dict) else None)
    return None


def _embedding_inputs(raw: Any) -> list[str]:
    """Inputs as text; token-id arrays become space-joined ids so words == tokens."""
    items = [raw] if isinstance(raw, str) else raw
    if isinstance(items, list) and items and all(isinstance(t, int) for t in items):
        items = [items]
    if not isinstance(items, list) or not items:
        raise Rejected("input must be a non-empty string or list")
    texts: list[str] = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and all(isinstance(token, int) for token in item):
            texts.append(" ".join(map(str, item)))
        else:
            raise Rejected("input must be a string, a list of strings, or token arrays")
    return texts


def create_openai_app(
    flavor: Flavor, api_key: str | None = None, *, models: Sequence[str] | None = None
) -> Starlette:
    """Fake upstream for one OpenAI-compatible server flavor.

    Any model name is accepted; `models` only feeds the listing endpoints and
    the default when a request names none.
    """
    fake = _OpenAIFake(flavor, api_key, models or [_DEFAULT_MODELS[flavor]])
    routes: list[Route]
    if flavor == "azure":
        # Foundry resources serve under /models, serverless endpoints at the root.
        routes = []
        for prefix in ("/models", ""):
            routes += [
                Route(prefix + "/chat/completions", fake.chat, methods=["POST"]),
                Route(prefix + "/embeddings", fake.embeddings, methods=["POST"]),
                Route(prefix + "/info", fake.model_info, methods=["GET"]),
            ]
    else:
        routes = [
            Route("/v1/chat/completions", fake.chat, methods=["POST"]),
            Route("/v1/completions", fake.completions, methods=["POST"]),
            Route("/v1/models", fake.list_models, methods=["GET"]),
            Route("/health", _health, methods=["GET"]),
        ]
        if flavor == "vllm":
            # TGI serves embeddings from a separate server, so it answers 404 here.
            routes.append(Route("/v1/embeddings", fake.embeddings, methods=["POST"]))
    return FakeApp(routes)
