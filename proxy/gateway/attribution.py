"""Who a request is for: user, agent, session and use case (DESIGN.md §4.3), and who pays.

First match wins: our headers, then peers' headers (cheap aliases), then body ``metadata``, then
body ``user`` / ``safety_identifier`` (user only), then the key's defaults; the use case then
falls back to the ``use_cases`` map of the agent; anything still missing is ``unknown``.

The user a client declares is its end user. With keys required (``pinned``) the key's user and
team pay and the declared user is only recorded as ``end_user``, unless the key is a service
key; in open mode the declared user pays, as it always did. The team is always the key's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metering.events import UserSource
from metering.keys import KeyInfo
from proxy.gateway.errors import ProxyError

MAX_LEN = 128
UNKNOWN = "unknown"

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
) -> Attribution:
    """Resolve and validate the four attribution fields; ProxyError(400) names a bad field."""
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ProxyError(400, "metadata must be an object", code="invalid_attribution")
    meta = metadata or {}
    declared = (
        _from_headers(headers, "user")
        or _checked(meta.get("user"), "metadata.user")
        or _checked(meta.get("user_id"), "metadata.user_id")
        or _checked(body.get("safety_identifier"), "safety_identifier")
        or _checked(body.get("user"), "user")
    )
    agent = (
        _from_headers(headers, "agent")
        or _checked(meta.get("agent"), "metadata.agent")
        or (key.agent if key else None)
    )
    session = _from_headers(headers, "session") or _checked(meta.get("session"), "metadata.session")
    use_case = (
        _from_headers(headers, "use_case")
        or _checked(meta.get("use_case"), "metadata.use_case")
        or (key.use_case if key else None)
        or (agent_use_cases.get(agent) if agent else None)
    )
    user, source = _payer(declared, key, pinned=pinned)
    team = (key.team if key else None) or UNKNOWN
    return Attribution(
        user,
        agent or UNKNOWN,
        session or UNKNOWN,
        use_case or UNKNOWN,
        team,
        declared or UNKNOWN,
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


def _from_headers(headers: Mapping[str, str], field: str) -> str | None:
    for name in HEADERS[field]:
        value = headers.get(name)
        if value:
            return _checked(value, f"header {_HEADER_NAMES.get(name, name)}")
    return None


def checked_value(value: Any, where: str) -> str | None:
    """An attribution value as given, None when absent; ProxyError(400) when unusable."""
    return _checked(value, where)


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
