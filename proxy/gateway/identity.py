"""Identity values that third-party clients send by themselves, read leniently.

Our own ``X-Meter-*`` headers and ``metadata.{user,agent,session,use_case}`` are a contract, so a
bad value there is a 400 (attribution.py). What clients send on their own (``metadata.user_id``,
body ``user`` / ``safety_identifier``, peers' headers) is not ours to reject: a request must never
fail over it. Known formats are parsed (Claude Code's ``metadata.user_id``); anything else is kept
in a bounded form and the adjustment is counted (``tokenmeter_identity_normalized_total``).

The bounded form of a value past ``MAX_LEN`` characters is its first 111 characters, ``~`` and 16
hex digits of its BLAKE2b hash: 128 characters, still distinct for distinct values, still
readable. Non-printable characters become ``?``; numbers and booleans their text; other JSON
values their compact JSON, bounded the same way.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

MAX_LEN = 128
_HASH_HEX = 16
_KEEP = MAX_LEN - _HASH_HEX - 1

# reason labels of the counter: a small fixed set
TOO_LONG = "too_long"
NON_PRINTABLE = "non_printable"
NOT_A_STRING = "not_a_string"

_LEGACY = re.compile(
    r"^user_(?P<device>[0-9a-f]{16,128})_account_(?P<account>[0-9a-f-]{0,64})"
    r"_session_(?P<session>[0-9a-f-]{1,64})$"
)


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What Claude Code says about itself in ``metadata.user_id``."""

    device: str | None
    account: str | None
    session: str | None


@dataclass(frozen=True, slots=True)
class Bounded:
    value: str | None
    reasons: tuple[str, ...] = ()


def bounded(value: Any) -> Bounded:
    """``value`` as an attribution string of at most MAX_LEN printable characters, and why it
    was changed (empty when it was kept as sent). None and "" mean absent."""
    if value is None or value == "":
        return Bounded(None)
    reasons: list[str] = []
    if isinstance(value, str):
        text = value
    else:
        reasons.append(NOT_A_STRING)
        text = _as_text(value)
    if not text.isprintable():
        reasons.append(NON_PRINTABLE)
        text = "".join(c if c.isprintable() else "?" for c in text)
    if len(text) > MAX_LEN:
        reasons.append(TOO_LONG)
        digest = hashlib.blake2b(text.encode(), digest_size=_HASH_HEX // 2).hexdigest()
        text = f"{text[:_KEEP]}~{digest}"
    return Bounded(text, tuple(reasons))


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


def parse_client_identity(value: Any) -> ClientIdentity | None:
    """Claude Code's ``metadata.user_id``: the JSON form of 2.x
    (``{"device_id": …, "account_uuid": …, "session_id": …}``) or the legacy
    ``user_<hash>_account_<uuid>_session_<uuid>``; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("{"):
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or not (
            {"device_id", "account_uuid", "session_id"} & data.keys()
        ):
            return None
        return ClientIdentity(
            device=bounded(data.get("device_id")).value,
            account=bounded(data.get("account_uuid")).value,
            session=bounded(data.get("session_id")).value,
        )
    match = _LEGACY.match(value)
    if match is None:
        return None
    return ClientIdentity(
        device=match["device"][:MAX_LEN], account=match["account"] or None, session=match["session"]
    )
