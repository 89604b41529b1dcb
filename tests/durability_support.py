"""Helpers for the durability tests: `tokenmeter serve` as a real subprocess, a cuttable TCP relay
in front of PostgreSQL, and an async load generator that records what each client saw."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import yaml
from sqlalchemy import create_engine, text

from tests.support import wait_for

REPO = Path(__file__).resolve().parent.parent
MODEL = "vllm-model"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    path: Path,
    *,
    db_url: str,
    journal_dir: Path,
    upstream_base: str,
    flush_interval_s: float = 0.05,
    auth_required: bool = False,
    batch_max_events: int = 1000,
) -> Path:
    config: dict[str, Any] = {
        "storage": {
            "url": db_url,
            "journal_dir": str(journal_dir),
            "flush_interval_s": flush_interval_s,
            "batch_max_events": batch_max_events,
        },
        "auth": {
            "required": auth_required,
            "refresh_interval_s": 0.25,
            "admin_key": "admin-test-key",  # real (fake) backends: serve wants an admin key
        },
        "models": [
            {
                "name": MODEL,
                "deployments": [
                    {
                        "backend": "vllm",
                        "model": "mistralai/Mistral-7B-Instruct-v0.3",
                        "api_base": upstream_base,
                        "api_key_env": "TM_TEST_VLLM_KEY",
                    }
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _clean_env() -> dict[str, str]:
    """The test's environment without TOKENMETER_* overrides, so the config file is the truth."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TOKENMETER_")}


def tokenmeter(*args: str, timeout_s: float = 60) -> str:
    """Run a ``tokenmeter`` subcommand; its stdout, or AssertionError with its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, (
        f"tokenmeter {' '.join(args)} exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc.stdout


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children first."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for child in (task / "children").read_text().split():
                found.append(int(child))
                found += descendants(int(child))
    return found


class ServerProcess:
    """``tokenmeter serve`` in a subprocess on a free loopback port, output to files."""

    def __init__(
        self, config: Path, log_dir: Path, name: str = "server", args: Sequence[str] = ()
    ) -> None:
        self.config = config
        self.args = list(args)  # more of serve's options
        self.log_dir = log_dir
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self._logs: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        """Start and wait until /healthz answers; a lost race for the port is retried."""
        for _attempt in range(3):
            self.generation += 1
            self.port = free_port()
            log = self.log_dir / f"{self.name}-{self.generation}.log"
            self._logs.append(log)
            with log.open("wb") as out:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "proxy",
                        "serve",
                        "--config",
                        str(self.config),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--log-level",
                        "warning",
                        *self.args,
                    ],
                    cwd=REPO,
                    env=_clean_env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_healthy(timeout_s):
                return self
            if b"address already in use" not in log.read_bytes().lower():
                break
        raise AssertionError(f"{self.name} did not become healthy\n{self.logs()}")

    def _wait_healthy(self, timeout_s: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return True
            time.sleep(0.05)
        self.kill()
        return False

    def kill(self) -> None:
        """SIGKILL to serve and every process it started (its ledger process among them), as
        a crash of the host would: no shutdown hooks, no final flush anywhere."""
        if self.proc is not None and self.proc.poll() is None:
            tree = descendants(self.proc.pid)
            os.kill(self.proc.pid, signal.SIGKILL)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)

    def children(self) -> list[int]:
        assert self.proc is not None
        return descendants(self.proc.pid)

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def readyz(self) -> tuple[int, dict[str, Any]]:
        r = httpx.get(self.url + "/readyz", timeout=5)
        return r.status_code, r.json()

    def wait_drained(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll /readyz until the database is reachable and nothing is left in the journal
        (events of this process and bytes of replayed segments alike)."""

        def drained() -> dict[str, Any] | None:
            status, body = self.readyz()
            ok = status == 200 and body["backlog_events"] == 0 and body["backlog_bytes"] == 0
            return body if ok else None

        return wait_for(drained, timeout_s=timeout_s, interval_s=0.05)

    def logs(self) -> str:
        parts = []
        for log in self._logs:
            content = log.read_text(errors="replace") if log.exists() else "(missing)"
            parts.append(f"----- {log.name} -----\n{content[-20000:]}")
        return "\n".join(parts)


# --------------------------------------------------------------------------- load


@dataclass(slots=True)
class Outcome:
    """What one client request saw."""

    session: str
    stream: bool
    user: str = "unknown"
    http_status: int | None = None
    complete: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None


def new_session(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def chat(
    http: aiohttp.ClientSession,
    base_url: str,
    outcome: Outcome,
    prompt: str,
    *,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """One chat completion; fills ``outcome`` (never raises for transport failures)."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
    }
    if outcome.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    hdrs = {"X-Meter-Session": outcome.session, "X-Meter-User": outcome.user, **(headers or {})}
    try:
        async with http.post(
            base_url + "/v1/chat/completions", data=orjson.dumps(body), headers=hdrs
        ) as resp:
            outcome.http_status = resp.status
            if not outcome.stream:
                raw_body = await resp.read()
                try:
                    payload = orjson.loads(raw_body)
                except orjson.JSONDecodeError:
                    payload = {"body": raw_body[:200].decode(errors="replace")}
                usage = payload.get("usage") if resp.status == 200 else None
                if usage:
                    outcome.input_tokens = usage["prompt_tokens"]
                    outcome.output_tokens = usage["completion_tokens"]
                    outcome.complete = True
                else:
                    outcome.error = f"HTTP {resp.status}: {payload}"
                return outcome
            usage = None
            done = errored = False
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                chunk = orjson.loads(data)
                if "error" in chunk:
                    errored = True
                    outcome.error = str(chunk["error"])
                elif chunk.get("usage"):
                    usage = chunk["usage"]
            if usage:
                outcome.input_tokens = usage["prompt_tokens"]
                outcome.output_tokens = usage["completion_tokens"]
            outcome.complete = resp.status == 200 and done and usage is not None and not errored
            if not outcome.complete and outcome.error is None:
                outcome.error = f"HTTP {resp.status}, done={done}, usage={usage}"
    except (TimeoutError, aiohttp.ClientError, ConnectionError, orjson.JSONDecodeError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome


async def run_load(
    outcomes: list[Outcome],
    request: Callable[[aiohttp.ClientSession, Outcome], Awaitable[Outcome]],
    *,
    concurrency: int,
    on_done: Callable[[Outcome], None] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Send one request per outcome, ``concurrency`` at a time."""
    queue: asyncio.Queue[Outcome] = asyncio.Queue()
    for o in outcomes:
        queue.put_nowait(o)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            while True:
                try:
                    o = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await request(http, o)
                if on_done is not None:
                    on_done(o)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


# --------------------------------------------------------------------------- database


def query(db_url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- TCP relay


class TcpRelay:
    """A loopback TCP relay to ``target`` that can be cut (every connection closed, new ones
    dropped on accept) and restored; runs its own event loop in a daemon thread."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self.dropped = 0
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="relay")

    def start(self) -> TcpRelay:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        fut.result(10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.dropped += 1
            _abort(writer)
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                if not w.transport.is_closing():
                    w.close()

    def cut(self) -> None:
        def _do() -> None:
            self._cut = True
            for w in list(self._writers):
                _abort(w)
            self._writers.clear()

        self._call(_do)

    def restore(self) -> None:
        def _do() -> None:
            self._cut = False

        self._call(_do)

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        assert done.wait(5)

    def stop(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                _abort(w)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    if not writer.transport.is_closing():
        writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once with a reset, as a dead network path or a crashed server would."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


TOKEN_COLUMNS = ("input_tokens", "output_tokens")


def events_by_session(db_url: str) -> dict[str, list[dict[str, Any]]]:
    rows = query(
        db_url,
        "SELECT id, session, status, usage_source, input_tokens, output_tokens FROM usage_events",
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["session"], []).append(row)
    return out


def assert_no_duplicates(db_url: str) -> int:
    [row] = query(
        db_url,
        "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids, COUNT(DISTINCT session) AS sessions "
        "FROM usage_events",
    )
    assert row["n"] == row["ids"] == row["sessions"], row
    return int(row["n"])


def assert_rollups_equal_events(db_url: str) -> None:
    """The hourly rollups hold exactly the sums of the events, per user and in total."""
    cols = ", ".join(f"SUM({c}) AS {c}" for c in TOKEN_COLUMNS)
    per_user_events = query(
        db_url,
        f'SELECT "user", COUNT(*) AS requests, {cols} FROM usage_events GROUP BY "user"',
    )
    per_user_rollups = query(
        db_url,
        f'SELECT "user", SUM(requests) AS requests, {cols} FROM usage_rollups_hourly '
        'GROUP BY "user"',
    )

    def normal(rows: list[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
        return {r["user"]: tuple(int(r[c]) for c in ("requests", *TOKEN_COLUMNS)) for r in rows}

    assert normal(per_user_rollups) == normal(per_user_events)


def assert_client_usage_recorded(outcomes: list[Outcome], db_url: str) -> None:
    """Every request the client saw answered in full has exactly one event, with its tokens."""
    events = events_by_session(db_url)
    problems = []
    for o in outcomes:
        if not o.complete:
            continue
        found = events.get(o.session, [])
        if len(found) != 1:
            problems.append(f"{o.session} (stream={o.stream}): {len(found)} events")
            continue
        [e] = found
        seen = (e["input_tokens"], e["output_tokens"], e["status"], e["usage_source"])
        if seen != (o.input_tokens, o.output_tokens, "ok", "upstream"):
            problems.append(
                f"{o.session}: client saw {(o.input_tokens, o.output_tokens)}, event {seen}"
            )
    assert not problems, f"{len(problems)} answered requests mis-recorded: {problems[:10]}"


def prepare_postgres(config: Path) -> None:
    out = tokenmeter("db", "upgrade", "--config", str(config))
    assert "schema at revision" in out
