"""Real servers on loopback ports for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from sqlalchemy import Engine, text

from metering.store import create_db_engine
from proxy.app import create_app
from proxy.cli.ledger import ledger_service
from proxy.cli.serve import http_protocol
from proxy.config.settings import Settings, load_settings

ADMIN_KEY = "admin-test-key"
T = TypeVar("T")


def wait_for(check: Callable[[], T], *, timeout_s: float = 10.0, interval_s: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last: {value!r})")
        time.sleep(interval_s)


class Gateway:
    """tokenmeter's real app under uvicorn in a thread, on a free loopback port."""

    def __init__(
        self,
        db_path: Path,
        config: dict[str, Any],
        *,
        db_url: str | None = None,
        http: str = "serve",
    ) -> None:
        """A gateway on the SQLite file ``db_path``, or on ``db_url`` (its journal is still
        beside ``db_path``, so replicas on one PostgreSQL each have their own). ``http`` is
        uvicorn's protocol: ``serve``'s own (the default), or another, such as ``"h11"``: the
        app under an ASGI server that offers it nothing of its own."""
        self.db_url = db_url or f"sqlite:///{db_path}"
        self.journal_dir = db_path.parent / "journal"
        defaults = {
            "storage": {
                "url": self.db_url,
                "flush_interval_s": 0.02,
                "journal_dir": str(self.journal_dir),
            },
            "auth": {"admin_key": ADMIN_KEY, "refresh_interval_s": 0.05},
        }
        for section, values in defaults.items():  # a test's settings refine these sections
            config[section] = {**values, **config.get(section, {})}
        self.db_url = config["storage"]["url"]  # a test may put the ledger on PostgreSQL
        self.settings = load_settings(**config)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(self.settings)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                loop="uvloop",
                http=http_protocol(self.settings) if http == "serve" else http,  # type: ignore[arg-type]
                lifespan="on",
                timeout_graceful_shutdown=2,
            )
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.engine: Engine = create_db_engine(self.db_url)
        self.ledger = LedgerThread(self.settings) if self.settings.storage.ledger_process else None

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> Gateway:
        self._thread.start()
        wait_for(lambda: self._server.started, timeout_s=20)
        if self.ledger is not None:  # after the app's start-up has migrated the ledger, as serve
            self.ledger.start()
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self.ledger is not None:
            self.ledger.stop()
        self.engine.dispose()

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def create_key(self, **fields: Any) -> str:
        body = {"user": "alice", **fields}
        r = httpx.post(f"{self.url}/admin/keys", json=body, headers=self.admin_headers)
        r.raise_for_status()
        return str(r.json()["key"])

    def events(self, where: str = "1=1", **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT * FROM usage_events WHERE {where} ORDER BY id"), params
            )
            return [dict(r._mapping) for r in rows]

    def wait_events(self, n: int, where: str = "1=1", **params: Any) -> list[dict[str, Any]]:
        """Exactly ``n`` events matching ``where`` once the writer has caught up."""
        seen: list[list[dict[str, Any]]] = []

        def caught_up() -> bool:
            seen.append(self.events(where, **params))
            return len(seen[-1]) >= n

        try:
            wait_for(caught_up)
        except AssertionError as exc:
            raise AssertionError(f"expected {n} events, found {len(seen[-1])}: {seen[-1]}") from exc
        rows = seen[-1]
        assert len(rows) == n, rows
        return rows


class LedgerThread:
    """The ledger process's work (``tokenmeter ledger run``) in a thread of the test process,
    beside an in-thread ``Gateway``: the same code, sharing the journal directory the same way."""

    def __init__(self, settings: Settings) -> None:
        self.service = ledger_service(settings)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="test-ledger")

    def _run(self) -> None:
        self._loop.run_until_complete(self.service.run(self._stop))

    def start(self) -> LedgerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        self._loop.close()


def free_port() -> int:
    """A loopback port nothing listens on (for servers started in a subprocess)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(
    config: Path, *extra: str, log: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[str]:
    """``tokenmeter serve --config CONFIG`` in a subprocess on a free port; yields its URL.
    ``env`` is added to this process's environment (less any PROMETHEUS_MULTIPROC_DIR); the
    admin key is ADMIN_KEY unless ``env`` or the config sets another."""
    port = free_port()
    env = (
        {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        | {"TOKENMETER_ADMIN_KEY": ADMIN_KEY}
        | (env or {})
    )
    out = log.open("w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), timeout_s=60)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database migrated to head, for a module's gateway; dropped after."""
    import uuid

    from sqlalchemy import create_engine

    from metering.store import upgrade_schema

    name = "tm_" + uuid.uuid4().hex[:12]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    engine = create_db_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
