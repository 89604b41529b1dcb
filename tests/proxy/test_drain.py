"""SIGTERM drains: `tokenmeter serve` stops accepting, lets open streams run until the drain
deadline, cuts the rest with an error event, and meters every stream exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from sqlalchemy import text

from metering.store import create_db_engine, upgrade_schema
from tests.support import free_port, wait_for

STREAMS = 20
# uvicorn re-raises the SIGTERM it handled once it has shut down, as a process should
EXITED = (0, -signal.SIGTERM)


def start_serve(tmp_path: Path, db_url: str, fake_url: str, drain_s: float) -> tuple[Any, str]:
    config = {
        "storage": {"url": db_url, "journal_dir": str(tmp_path / "journal")},
        "auth": {"required": False, "admin_key": "drain-admin-key"},
        "limits": {"drain_timeout_s": drain_s},
        "models": [
            {
                "name": "long",
                "deployments": [
                    {
                        "backend": "vllm",
                        "model": "m",
                        "api_base": fake_url + "/v1",
                        "api_key_env": "TM_TEST_VLLM_KEY",
                    }
                ],
            }
        ],
    }
    path = tmp_path / "tokenmeter.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(path),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(url), timeout_s=60)
    return proc, url


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Streamer(threading.Thread):
    """One client stream; notes its first chunk, its text and how it ended."""

    def __init__(self, url: str, prompt: str) -> None:
        super().__init__(daemon=True)
        self.client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        self.prompt = prompt
        self.started = threading.Event()
        self.chunks = 0
        self.ending: str = "running"

    def run(self) -> None:
        try:
            stream = self.client.chat.completions.create(
                model="long", messages=[{"role": "user", "content": self.prompt}], stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    self.chunks += 1
                    self.started.set()
            self.ending = "complete"
        except openai.APIError as exc:
            self.ending = f"error: {exc}"
        finally:
            self.started.set()


def run_streams(url: str, prompt: str) -> list[Streamer]:
    streams = [Streamer(url, prompt) for _ in range(STREAMS)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.started.wait(30)
    return streams


def events(db_url: str) -> list[dict[str, Any]]:
    engine = create_db_engine(db_url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM usage_events"))]
    engine.dispose()
    return rows


@pytest.fixture
def ledger(db_url: str) -> str:
    engine = create_db_engine(db_url)
    upgrade_schema(engine)
    engine.dispose()
    return db_url


def test_streams_past_the_drain_deadline_are_cut_and_metered_once(fakes, ledger, tmp_path):
    # 300 words at 0.1 s each: 30 s streams; the drain allows 3 s after SIGTERM
    proc, url = start_serve(tmp_path, ledger, fakes["vllm"].url, drain_s=3)
    streams = run_streams(url, "[[fake:words=300]] [[fake:chunk_delay=0.1]] go")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: not _up(url))  # it stops accepting at once, while the streams run on
    assert proc.poll() is None
    assert proc.wait(timeout=30) in EXITED
    waited = time.monotonic() - t0
    for s in streams:
        s.join(timeout=10)
    assert waited >= 3  # the deadline was honoured, not cut short
    assert all(s.ending.startswith("error") and "drain" in s.ending for s in streams), [
        s.ending for s in streams
    ]
    rows = events(ledger)
    assert len(rows) == STREAMS and len({r["request_id"] for r in rows}) == STREAMS
    assert {r["status"] for r in rows} == {"cancelled"}
    assert all(r["output_tokens"] > 0 and r["usage_source"] == "estimated" for r in rows)
    assert sum(r["output_tokens"] for r in rows) >= sum(s.chunks for s in streams)


def test_streams_that_end_within_the_drain_finish_normally(fakes, ledger, tmp_path):
    # 30 words at 0.1 s: 3 s streams; the drain allows 30 s
    proc, url = start_serve(tmp_path, ledger, fakes["vllm"].url, drain_s=30)
    streams = run_streams(url, "[[fake:words=30]] [[fake:chunk_delay=0.1]] go")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in EXITED
    for s in streams:
        s.join(timeout=10)
    assert [s.ending for s in streams] == ["complete"] * STREAMS
    rows = events(ledger)
    assert len(rows) == STREAMS and {r["status"] for r in rows} == {"ok"}
    assert {r["output_tokens"] for r in rows} == {30}
