"""What of an upstream's words may reach a client: never a provider key, never an internal URL.

Upstreams echo credentials in their errors (a 401 quoting the key it refused) and our own
connection errors name the upstream's address. Every message bound for a client passes through
``Redactor.scrub``: configured key values and ``sk-…`` / ``Bearer …`` shapes become
``[redacted]``, and each deployment's base URL (or bare host:port) becomes its name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import urlsplit

REDACTED = "[redacted]"
_MIN_SECRET_LEN = 6  # shorter "keys" (test placeholders) would blank out ordinary words
_SHAPES = re.compile(
    r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"
    r"|\b(?:sk|tm|sk-ant|key)-[A-Za-z0-9_-]{6,}"
)


class Redactor:
    """Scrubs one text; built from every configured deployment."""

    def __init__(self, secrets: Iterable[str], places: Iterable[tuple[str, str]]) -> None:
        self._secrets = sorted(
            {s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True
        )
        # longest first, so a base URL is replaced before the host:port inside it
        self._places = sorted(set(places), key=lambda p: len(p[0]), reverse=True)

    @classmethod
    def for_deployments(cls, deployments: Iterable[_Dep]) -> Redactor:
        secrets: list[str] = []
        places: list[tuple[str, str]] = []
        for d in deployments:
            s, p = _of(d.name, d.api_base, d.headers)
            secrets += s
            places += p
        return cls(secrets, places)

    @classmethod
    def for_upstream(cls, name: str, api_base: str, headers: dict[str, str]) -> Redactor:
        """What one deployment's own answers may leak: its key and its address."""
        return cls(*_of(name, api_base, headers))

    def scrub_bytes(self, data: bytes) -> bytes:
        return self.scrub(data.decode(errors="replace")).encode()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _SHAPES.sub(_shape, text)
        for place, label in self._places:
            if place and place in text:
                text = _url_at(place).sub(label, text)
        return text


def _of(
    name: str, api_base: str, headers: dict[str, str]
) -> tuple[list[str], list[tuple[str, str]]]:
    secrets = [
        value.removeprefix("Bearer ").strip()
        for header, value in headers.items()
        if header in ("authorization", "x-api-key", "api-key")
    ]
    label = f"deployment {name}"
    places = [(api_base, label)]
    netloc = urlsplit(api_base).netloc
    if netloc:
        places.append((netloc, label))
    return secrets, places


def _shape(match: re.Match[str]) -> str:
    head = match.group(0).split(None, 1)[0] if " " in match.group(0) else ""
    return f"{head} {REDACTED}" if head else REDACTED


def _url_at(place: str) -> re.Pattern[str]:
    # The place with whatever path follows it (a URL's path names internal routes too).
    return re.compile(r"(?:https?://)?" + re.escape(place) + r"[^\s'\"),]*")


class _Dep(Protocol):  # what for_deployments reads of a Deployment
    @property
    def name(self) -> str: ...
    @property
    def api_base(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
