"""What a client without credentials can cost: bounded request heads, slow clients timed out
(through `tokenmeter serve`'s real protocol stack), and unknown keys that cost one indexed
lookup each, negative-cached, never a reload of the key table. Each on a SQLite and on a
PostgreSQL ledger."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from sqlalchemy import Engine, event, text

from metering.store import create_db_engine
from tests.conftest import backend_models
from tests.support import Gateway, pg_database, serving, wait_for


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('limits-db') / 'tm.db'}"
        return
    with pg_database(request.getfixturevalue("pg_admin_url")) as url:
        yield url


@pytest.fixture(scope="module")
def served(fakes, ledger_url, tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("limits")
    config = {
        "storage": {"url": ledger_url, "journal_dir": str(tmp / "journal")},
        "auth": {"required": False},
        "limits": {
            "max_header_bytes": 16384,
            "max_headers": 50,
            "header_timeout_s": 1.0,
            "body_timeout_s": 1.0,
        },
        "models": backend_models(fakes),
    }
    path = tmp / "tokenmeter.yaml"
    path.write_text(yaml.safe_dump(config))
    with serving(path, log=tmp / "serve.log") as url:
        yield url


def raw_exchange(url: str, data: bytes, *, wait_s: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        # refused before it read everything: the answer is still there
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_an_oversized_header_is_431(served):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n"
    assert status_of(raw_exchange(served, head)) == 431


def test_too_many_headers_is_431(served):
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    assert (
        status_of(raw_exchange(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"))
        == 431
    )


def test_an_ordinary_request_with_many_headers_passes(served):
    headers = {f"x-extra-{i}": "v" * 100 for i in range(40)}
    assert httpx.get(served + "/healthz", headers=headers).status_code == 200


def test_a_head_trickled_too_slowly_is_408(served):
    t0 = time.monotonic()
    answer = raw_exchange(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert status_of(answer) == 408 and time.monotonic() - t0 < 8


def test_a_body_trickled_too_slowly_is_408_in_the_api_shape_and_recorded(served, ledger_url):
    session = "slow-" + secrets.token_hex(6)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"x-meter-session: " + session.encode() + b"\r\n"
        b'content-length: 100\r\n\r\n{"model": '
    )
    answer = raw_exchange(served, head)
    assert status_of(answer) == 408
    assert b'"code":"request_timeout"' in answer
    engine = create_db_engine(ledger_url)
    try:
        [row] = wait_for(lambda: recorded(engine, session))
    finally:
        engine.dispose()
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "client_error",
        408,
        "request_timeout",
    )


def recorded(engine: Engine, session: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM usage_events WHERE session = :s"), {"s": session})
        return [dict(r._mapping) for r in rows]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request, fakes, tmp_path_factory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("dos")
    config = {"models": backend_models(fakes), "auth": {"required": True}}
    if request.param == "sqlite":
        gw = Gateway(tmp / "tm.db", config).start()
        yield gw
        gw.stop()
        return
    with pg_database(request.getfixturevalue("pg_admin_url")) as url:
        gw = Gateway(tmp / "tm.db", {**config, "storage": {"url": url}}).start()
        yield gw
        gw.stop()


class KeyQueries:
    """Statements the gateway's own engine runs against the key table."""

    def __init__(self, gateway: Gateway) -> None:
        self.engine = gateway.app.state.runtime.engine
        self.statements: list[str] = []
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, params, context, many) -> None:
        if "api_keys" in statement:
            self.statements.append(statement)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def chat(gateway: Gateway, key: str) -> int:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "vllm-model", "messages": [{"role": "user", "content": "hi"}]},
    ).status_code


def test_unknown_keys_cost_one_indexed_lookup_each_and_no_reload(gateway):
    for _ in range(30):  # a table worth reloading
        gateway.create_key(user="u" + secrets.token_hex(4))
    good = gateway.create_key(user="alice")
    queries = KeyQueries(gateway)
    try:
        bad = [f"tm-{secrets.token_urlsafe(32)}" for _ in range(100)]
        assert [chat(gateway, k) for k in bad] == [401] * 100
        assert len(queries.statements) == 100
        assert all("key_hash" in s.split("WHERE", 1)[-1] for s in queries.statements)
        assert [chat(gateway, k) for k in bad[:20]] == [401] * 20
        assert len(queries.statements) == 100  # remembered: no second lookup
        assert chat(gateway, good) == 200
    finally:
        queries.close()


def test_a_key_created_elsewhere_works_on_its_first_request(gateway, tmp_path):
    from metering.keys import create_key
    from metering.store import create_db_engine

    other = create_db_engine(gateway.db_url)  # another replica's write, not this process's
    _, key = create_key(other, user="bob")
    other.dispose()
    assert chat(gateway, key) == 200


def test_the_unknown_key_memory_is_bounded_oldest_forgotten_first(tmp_path, monkeypatch):
    from metering.store import upgrade_schema
    from proxy.gateway import auth
    from proxy.gateway.errors import ProxyError

    monkeypatch.setattr(auth, "_MAX_MISSING", 3)
    engine = create_db_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    upgrade_schema(engine)
    lookups: list[str] = []

    def seen(conn, cursor, statement, params, context, many) -> None:
        if "key_hash" in statement:
            lookups.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    cache = auth.KeyCache(engine, refresh_interval_s=60, required=True)
    bad = [f"tm-{secrets.token_urlsafe(16)}" for _ in range(4)]

    async def refused(token: str) -> int:
        with pytest.raises(ProxyError):
            await cache.authenticate(token)
        return len(lookups)

    async def run() -> list[int]:
        await cache.reload()  # reads the table once, before any lookup
        base = len(lookups)
        first = [await refused(t) for t in bad]  # the fourth pushes the first out
        again = [await refused(t) for t in bad[1:]]
        return [n - base for n in [*first, *again, await refused(bad[0])]]

    try:
        assert asyncio.run(run()) == [1, 2, 3, 4, 4, 4, 4, 5]
    finally:
        engine.dispose()
