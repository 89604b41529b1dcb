"""Who a request is for: user, agent, session and use case (DESIGN.md §4.3), and who pays.

First match wins: our headers, then peers' headers (cheap aliases), then body ``metadata``, then
body ``user`` / ``safety_identifier`` (user only), then the key's defaults, then what Claude Code
says about itself in ``metadata.user_id`` (identity.py); the use case then falls back to the
``use_cases`` map of the agent; anything still missing is ``unknown``.

Our own fields (``X-Meter-*``, ``metadata.{user,agent,session,use_case}``) are strict: a bad value
is a 400 naming it. Fields clients send by themselves never fail a request (identity.py).

The user a client declares is its end user. With keys required (``pinned``) the key's user and
team pay and the declared user is only recorded as ``end_user``, unless the key is a service
key; in open mode the declared user pays, as it always did. The team is always the key's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metering.events import UserSource
from metering.keys import KeyInfo
from proxy.gateway.errors import ProxyError
from proxy.gateway.identity import MAX_LEN as MAX_LEN
from proxy.gateway.identity import bounded, parse_client_identity

if TYPE_CHECKING:
    from starlette.requests import Request

UNKNOWN = "unknown"
CLAUDE_CODE_AGENT = "claude-code"

HEADERS: dict[str, tuple[str, ...]] = {
    "user": ("x-meter-user", "helicone-user-id", "x-litellm-end-user-id"),
    "agent": ("x-meter-agent", "x-litellm-agent-id"),
    "session": (
        "x-meter-session",
        "x-claude-code-session-id",
        "helicone-session-id",
        "x-litellm-session-id",
        "x-session-id",
        "session-id",  # Codex CLI
    ),
    "use_case": ("x-meter-use-case",),
}
_HEADER_NAMES = {
    "x-meter-user": "X-Meter-User",
    "x-meter-agent": "X-Meter-Agent",
    "x-meter-session": "X-Meter-Session",
    "x-meter-use-case": "X-Meter-Use-Case",
}

# Called with (field, reason) each time a client's own value had to be bounded.
OnNormalized = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Attribution:
    user: str
    agent: str
    session: str
    use_case: str
    team: str = UNKNOWN
    end_user: str = UNKNOWN
    user_source: UserSource = "unknown"


def key_attribution(key: KeyInfo) -> Attribution:
    """A request known only by its key (its body unread or unusable): the key pays."""
    user, source = _payer(None, key, pinned=True)
    return Attribution(
        user,
        key.agent or UNKNOWN,
        UNKNOWN,
        key.use_case or UNKNOWN,
        key.team or UNKNOWN,
        UNKNOWN,
        source,
    )


def resolve_attribution(
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    *,
    key: KeyInfo | None,
    agent_use_cases: Mapping[str, str],
    pinned: bool = False,
    on_normalized: OnNormalized | None = None,
) -> Attribution:
    """Resolve the four attribution fields; ProxyError(400) names a bad field of ours."""
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ProxyError(400, "metadata must be an object", code="invalid_attribution")
    meta = metadata or {}
    lenient = _Lenient(on_normalized)
    client = parse_client_identity(meta.get("user_id"))
    declared = (
        _from_headers(headers, "user", lenient)
        or _checked(meta.get("user"), "metadata.user")
        or (None if client else lenient(meta.get("user_id"), "metadata.user_id"))
        or lenient(body.get("safety_identifier"), "safety_identifier")
        or lenient(body.get("user"), "user")
    )
    agent = (
        _from_headers(headers, "agent", lenient)
        or _checked(meta.get("agent"), "metadata.agent")
        or (key.agent if key else None)
        or (CLAUDE_CODE_AGENT if client else None)
    )
    session = (
        _from_headers(headers, "session", lenient)
        or _checked(meta.get("session"), "metadata.session")
        or (client.session if client else None)
    )
    use_case = (
        _from_headers(headers, "use_case", lenient)
        or _checked(meta.get("use_case"), "metadata.use_case")
        or (key.use_case if key else None)
        or (agent_use_cases.get(agent) if agent else None)
    )
    user, source = _payer(declared, key, pinned=pinned)
    claude_code_user = (client.account or client.device) if client else None
    if source == "unknown" and claude_code_user:
        # Claude Code's account (or device) names the user only when nothing else does: it
        # never replaces a key's user.
        user, source = claude_code_user, "declared"
    return Attribution(
        user,
        agent or UNKNOWN,
        session or UNKNOWN,
        use_case or UNKNOWN,
        (key.team if key else None) or UNKNOWN,
        declared or claude_code_user or UNKNOWN,
        source,
    )


def _payer(declared: str | None, key: KeyInfo | None, *, pinned: bool) -> tuple[str, UserSource]:
    """The paying user and where it came from."""
    key_user = key.user if key else None
    if key_user and pinned and not (key and key.service):
        return key_user, "key"
    if declared:
        return declared, "declared"
    if key_user:
        return key_user, "key"
    return UNKNOWN, "unknown"


class _Lenient:
    """Bounds a client's own value, reporting each adjustment."""

    __slots__ = ("_report",)

    def __init__(self, report: OnNormalized | None) -> None:
        self._report = report

    def __call__(self, value: Any, where: str) -> str | None:
        result = bounded(value)
        if result.reasons and self._report is not None:
            for reason in result.reasons:
                self._report(where, reason)
        return result.value


def header_map(request: Request) -> dict[str, str]:
    """A request's headers as a dict, the first of a repeated name winning as with Starlette's
    ``Headers.get``: each of the twelve attribution lookups was a scan of the header list, and
    each header absent a KeyError raised and caught (4 % of a request's samples, py-spy c=64)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(request.scope["headers"])}


def _from_headers(headers: Mapping[str, str], field: str, lenient: _Lenient) -> str | None:
    for name in HEADERS[field]:
        value = headers.get(name)
        if not value:
            continue
        ours = _HEADER_NAMES.get(name)
        return _checked(value, f"header {ours}") if ours else lenient(value, name)
    return None


def client_value(value: Any, where: str, on_normalized: OnNormalized | None = None) -> str | None:
    """A value a client sends by itself (e.g. the Responses API's ``conversation``), bounded
    instead of refused; None when absent."""
    return _Lenient(on_normalized)(value, where)


def _checked(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProxyError(400, f"{where} must be a string", code="invalid_attribution")
    if len(value) > MAX_LEN or not value.isprintable():
        raise ProxyError(
            400,
            f"{where} must be at most {MAX_LEN} printable characters",
            code="invalid_attribution",
        )
    return value
