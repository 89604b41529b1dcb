"""What a request is on the wire: the target parsed from its URL once, the head serialised per
request, and the case-insensitive headers of a response."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# As aiohttp sent (and decoded): hosted upstreams compress JSON when asked; vLLM never does.
ACCEPT_ENCODING = "gzip, deflate"

PoolKey = tuple[str, str, int]  # scheme, host, port


class Target(NamedTuple):
    """Where a URL's request goes and the parts of its head that follow from the URL."""

    key: PoolKey
    host: str  # to connect to (an IPv6 address without its brackets)
    port: int
    tls: bool
    host_header: str
    path: str  # path and query


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError("upstream URL must be http:// or https:// with a host")
    if parts.username is not None:
        raise ValueError("upstream URL carries credentials: configure a key instead")
    host = parts.hostname
    port = parts.port or DEFAULT_PORTS[scheme]
    netloc_host = f"[{host}]" if ":" in host else host
    host_header = netloc_host if port == DEFAULT_PORTS[scheme] else f"{netloc_host}:{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target((scheme, host, port), host, port, scheme == "https", host_header, path)


def request_head(method: str, target: Target, headers: Mapping[str, str], body_len: int) -> bytes:
    """The request line and header block: the given headers, then Host, Accept-Encoding and
    Content-Length unless given. No User-Agent (aiohttp's was skipped too)."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
        raise ValueError("header name or value with a line break")
    given = {name.lower() for name in headers}
    if "host" not in given:
        fields = f"Host: {target.host_header}\r\n{fields}"
    if "accept-encoding" not in given:
        fields += f"Accept-Encoding: {ACCEPT_ENCODING}\r\n"
    if "content-length" not in given and (body_len or method not in ("GET", "HEAD")):
        fields += f"Content-Length: {body_len}\r\n"
    return f"{method} {target.path} HTTP/1.1\r\n{fields}\r\n".encode()


class Headers(Mapping[str, str]):
    """A response's headers by lower-case name, a repeated header's values joined with ", "."""

    __slots__ = ("by_name",)

    def __init__(self) -> None:
        self.by_name: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        known = self.by_name.get(name)
        self.by_name[name] = value if known is None else f"{known}, {value}"

    def __getitem__(self, name: str) -> str:
        return self.by_name[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self.by_name.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def __repr__(self) -> str:
        return f"Headers({self.by_name!r})"
