"""`tokenmeter demo`, shortened, end to end: it plays its month through the real gateway, prints
the 80/20 headline that the export of its ledger also gives, and keeps serving until Ctrl-C."""

from __future__ import annotations

import io
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openpyxl
import pytest
from sqlalchemy import text

from metering.export.month import Month
from metering.store import create_db_engine

MONTH = Month(2026, 10)
REQUESTS = 400


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    output: str
    directory: Path

    @property
    def url(self) -> str:
        match = re.search(r"gateway up at (http://127\.0\.0\.1:\d+)", self.output)
        assert match, self.output
        return match.group(1)

    def printed(self, label: str) -> str:
        match = re.search(rf"^{label}\s+(.+)$", self.output, re.MULTILINE)
        assert match, self.output
        return match.group(1).strip()


def read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """Everything the process prints up to the line containing ``marker``."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    while not seen or marker not in seen[-1]:
        try:
            seen.append(lines.get(timeout=timeout_s))
        except queue.Empty:
            raise AssertionError("demo output so far:\n" + "".join(seen)) from None
    return "".join(seen)


@contextmanager
def running_demo(directory: Path, *, requests: int) -> Iterator[Demo]:
    """The demo, once it has printed its report and serves."""
    args = ["--seed", "11", "--requests", str(requests), "--port", "0", "--month", str(MONTH)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo", *args, "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield Demo(proc, read_until(proc, "Ctrl-C", timeout_s=120), directory)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo") / "run", requests=REQUESTS) as d:
        yield d


def test_printed_headline_is_the_exports(demo):
    r = httpx.get(f"{demo.url}/admin/exports/{MONTH}.xlsx", timeout=60)
    assert r.status_code == 200
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    header, *rows = wb["pareto"].iter_rows(values_only=True)
    by_metric = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert demo.printed("80/20") == by_metric["tokens"]["headline"]
    assert re.fullmatch(
        r"\d+% of use cases \(\d+ of \d+\) carry \d+% of tokens", demo.printed("80/20")
    )


def test_the_month_went_through_the_metering_path(demo):
    engine = create_db_engine(f"sqlite:///{demo.directory / 'ledger.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM usage_events")).mappings().all()
    engine.dispose()
    assert len(rows) == REQUESTS
    started = [datetime.fromisoformat(str(r["started_at"])).replace(tzinfo=UTC) for r in rows]
    assert all(MONTH.start <= t < MONTH.end for t in started)
    assert len({t.day for t in started}) >= 15  # a month, not a burst
    assert {r["stream"] for r in rows} == {True, False}
    assert sum(r["cache_read_tokens"] > 0 for r in rows) > REQUESTS // 10
    assert len({r["use_case"] for r in rows}) >= 10
    models = {r["model"] for r in rows}
    assert {"claude-sonnet", "mistral-large"} <= models and len(models) >= 4
    assert len({r["session"] for r in rows}) > 20
    assert all(r["status"] == "ok" for r in rows)


def test_report_has_the_verdict_and_where_to_look(demo):
    # 400 requests are under the projection's 1,000: the verdict says so, with what it saw.
    assert demo.printed("TCO").startswith("not enough traffic yet: 400 requests over 31.0 days")
    for where in ("/metrics", "/admin/tco", "tokenmeter export --month 2026-10", "Grafana"):
        assert where in demo.output
    assert "mistral-large requests" in demo.printed("on-prem pilot:")


def test_keeps_serving_until_ctrl_c(demo):
    assert httpx.get(f"{demo.url}/healthz").status_code == 200
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{demo.url}/healthz")


def test_sigterm_stops_the_gateway_too(tmp_path):
    with running_demo(tmp_path / "run", requests=20) as small:
        assert httpx.get(f"{small.url}/healthz").status_code == 200
        small.proc.send_signal(signal.SIGTERM)
        assert small.proc.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{small.url}/healthz")


def test_refuses_a_directory_that_holds_a_ledger(demo):
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--dir", str(demo.directory), "--no-serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "already holds a demo ledger" in proc.stderr


def test_sighup_stops_the_gateway_too(tmp_path):
    # A closed terminal sends SIGHUP: the gateway must not outlive the demo and keep its port.
    with running_demo(tmp_path / "run", requests=20) as small:
        assert httpx.get(f"{small.url}/healthz").status_code == 200
        small.proc.send_signal(signal.SIGHUP)
        assert small.proc.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{small.url}/healthz")


def play(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "proxy", "demo", "--seed", "3", "--port", "0", "--no-serve"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout_s)


def test_by_default_the_month_played_ends_now(tmp_path):
    before = datetime.now(UTC)
    proc = play("--requests", "120", "--dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    engine = create_db_engine(f"sqlite:///{tmp_path / 'run' / 'ledger.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT started_at FROM usage_events")).all()
    engine.dispose()
    started = [datetime.fromisoformat(str(r[0])).replace(tzinfo=UTC) for r in rows]
    assert len(started) == 120
    window_start = before.replace(second=0, microsecond=0) - timedelta(days=30)
    assert all(window_start <= t <= datetime.now(UTC) for t in started)
    # spread over the window, up to its last working days (so "the last 7 days" shows traffic)
    assert min(started) < window_start + timedelta(days=7)
    assert max(started) > before - timedelta(days=5)


@pytest.mark.parametrize("how", ["--storage-url", "--config"])
def test_writes_to_the_postgresql_ledger_it_is_given(tmp_path, pg_url, how):
    config = tmp_path / "tm.yaml"
    config.write_text(f"storage:\n  url: {pg_url}\n")
    given = pg_url if how == "--storage-url" else str(config)
    proc = play("--requests", "40", "--month", str(MONTH), how, given,
                "--dir", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    engine = create_db_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM usage_events")).scalar_one() == 40
    engine.dispose()
    assert not (tmp_path / "run" / "ledger.db").exists()
    again = play("--requests", "40", "--month", str(MONTH), "--storage-url", pg_url)
    assert again.returncode == 2
    assert "already holds 40 requests between 2026-10-01 00:00 and 2026-11-01 00:00" in again.stderr
