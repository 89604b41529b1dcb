"""How each OpenAI-compatible flavor admits or rejects a request, and how it words the refusal.

Error bodies differ per server and a gateway has to pass them on (or parse
them) faithfully, so each flavor gets its own exact shape here.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.simulated.openai_wire import Flavor
from proxy.simulated.responses import PacedResponse, json_bytes

# Body fields the Azure AI inference spec (2025-04-01) defines; anything else is
# an "extra parameter" governed by the `extra-parameters` header.
AZURE_CHAT_FIELDS = frozenset(
    {"messages", "frequency_penalty", "stream", "presence_penalty", "temperature", "top_p"}
    | {"max_tokens", "response_format", "stop", "tools", "tool_choice", "seed", "model"}
    | {"modalities"}
)
AZURE_EMBEDDING_FIELDS = frozenset(
    {"input", "dimensions", "encoding_format", "input_type", "model"}
)
_VLLM_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    # Pinned: Python 3.13 renamed this status phrase, vLLM kept the old name.
    422: "UnprocessableEntityError",
    501: "NotImplementedError",
}
_TGI_ERROR_TYPES = {424: "generation", 429: "overloaded", 500: "incomplete_generation"}


class Rejected(Exception):
    """The request is refused before any generation, with this status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _vllm_error_type(status: int) -> str:
    if status in _VLLM_ERROR_TYPES:
        return _VLLM_ERROR_TYPES[status]
    if status >= 500:
        return "InternalServerError"
    # vLLM names its error types after the status, e.g. UnprocessableEntityError.
    return _phrase(status).title().replace(" ", "").replace("-", "") + "Error"


def error_response(flavor: Flavor, status: int, message: str, delay: float = 0.0) -> Response:
    headers: dict[str, str] = {}
    body: dict[str, Any]
    if flavor == "vllm" and status == 401:
        # vLLM's API-key middleware answers with a bare string, unlike its other errors.
        body = {"error": "Unauthorized"}
    elif flavor == "vllm":
        error = {"message": message, "type": _vllm_error_type(status), "param": None}
        body = {"error": {**error, "code": status}}
    elif flavor == "tgi":
        error_type = _TGI_ERROR_TYPES.get(status, "generation" if status >= 500 else "validation")
        body = {"error": message, "error_type": error_type}
    else:
        body = {"error": {"code": _phrase(status), "message": message, "status": status}}
        headers["x-ms-error-code"] = _phrase(status)
    return PacedResponse([json_bytes(body)], status_code=status, headers=headers, delay=delay)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


class Gate:
    def __init__(self, flavor: Flavor, api_key: str | None) -> None:
        self.flavor: Flavor = flavor
        self.api_key = api_key

    def check_access(self, request: Request) -> None:
        presented = _bearer(request)
        if self.flavor == "azure":
            presented = request.headers.get("api-key") or presented
        if self.api_key is not None and presented != self.api_key:
            raise Rejected(
                "Access denied due to invalid subscription key or wrong API endpoint.", 401
            )
        if self.flavor == "azure" and not request.query_params.get("api-version"):
            raise Rejected("Missing required query parameter: api-version")

    async def admit(self, request: Request, azure_fields: frozenset[str]) -> dict[str, Any]:
        """The JSON body the model gets to see, after auth and Azure's extra-parameter policy."""
        self.check_access(request)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise Rejected(f"Invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise Rejected("Request body must be a JSON object")
        if self.flavor != "azure":
            return body
        mode = request.headers.get("extra-parameters", "error").lower()
        if mode in ("pass-through", "allow"):
            return body
        if mode == "drop":
            return {key: value for key, value in body.items() if key in azure_fields}
        if mode != "error":
            raise Rejected(
                f"Unexpected EXTRA_PARAMETERS option {mode}, "
                "expected options are ['error', 'drop', 'pass-through']"
            )
        extras = sorted(key for key in body if key not in azure_fields)
        if extras:
            raise Rejected(
                f"Extra parameters {extras!r} are not allowed when extra-parameters is not set "
                "or set to be 'error'. Set extra-parameters to 'pass-through' to pass to the model."
            )
        return body
