"""Error bodies in the shape each client family expects."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


_RETRYABLE = frozenset(
    {
        "upstream_timeout",
        "upstream_unavailable",
        "upstream_error",
        "upstream_rate_limited",
        "upstream_invalid_response",
    }
)


def retryable_code(code: str | None, status: int) -> bool:
    """Whether an attempt that failed with this error code and status moves to the next one."""
    return code in _RETRYABLE or (code == "upstream_rejected" and status == 429)


class ProxyError(Exception):
    """An error to answer with; raised anywhere on the request path."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers: dict[str, str] = dict(headers or {})  # to the client: Retry-After, limits


def openai_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    err_type = _OPENAI_TYPES.get(status, "api_error")
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def anthropic_error(
    status: int, message: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    err_type = _ANTHROPIC_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": err_type, "message": message}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def upstream_message(body: bytes) -> str:
    """The human message inside an upstream's error body, whatever its family."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500] or "upstream error"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return body.decode(errors="replace")[:500]


def journal_unavailable() -> ProxyError:
    return ProxyError(
        503, "usage journal is unwritable; refusing unmetered traffic", code="journal_unavailable"
    )
