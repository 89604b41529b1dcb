"""The ledger process (DESIGN.md §9): the serving processes only append to the journal; one
ledger process per journal directory moves it into the database. Against real processes:

- the serving process writes nothing to the database itself: with no ledger process the events
  wait in the journal and /readyz says why; `tokenmeter ledger run` alone drains them;
- a second ledger process on the same directory waits for the first, and takes over when it dies;
- kill -9 of the ledger process under load: serve restarts it, nothing answered is lost or doubled;
- kill -9 of serve alone: its ledger process drains what serve journaled, then exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from metering.status import read_status
from proxy.simulated import FakeServer
from tests.durability_support import (
    REPO,
    Outcome,
    ServerProcess,
    _clean_env,
    assert_client_usage_recorded,
    assert_no_duplicates,
    assert_rollups_equal_events,
    chat,
    new_session,
    prepare_postgres,
    query,
    run_load,
    write_config,
)
from tests.support import wait_for


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for s in started:
        s.kill()
    for s in started:
        print(s.logs())


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`tokenmeter ledger run` processes started by a test, killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    for log in sorted(tmp_path.glob("ledger-*.log")):
        print(f"----- {log.name} -----\n{log.read_text()}")


def start_ledger(config: Path, tmp_path: Path, n: int) -> subprocess.Popen[bytes]:
    out = (tmp_path / f"ledger-{n}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "proxy", "ledger", "run", "--config", str(config)],
        cwd=REPO,
        env=_clean_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def count_events(db_url: str) -> int:
    return int(query(db_url, "SELECT COUNT(*) AS n FROM usage_events")[0]["n"])


def send(url: str, n: int, session: str) -> None:
    for i in range(n):
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "vllm-model", "messages": [{"role": "user", "content": f"hi {i}"}]},
            headers={"X-Meter-Session": session},
            timeout=10,
        )
        assert r.status_code == 200, r.text


def segment_lines(journal: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in journal.glob("seg-*.jsonl"))


def the_ledger_child(server: ServerProcess, journal: Path) -> int:
    """The pid of serve's ledger process, once it has taken the journal's lock and works."""

    def find() -> int | None:
        status = read_status(journal)
        for pid in server.children():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"ledger" in cmdline and b"run" in cmdline and alive(pid):
                return pid if status is not None and status.pid == pid else None
        return None

    return wait_for(find, timeout_s=20)


def test_without_a_ledger_process_events_wait_in_the_journal_and_ledger_run_drains_them(
    fakes: dict[str, FakeServer],
    tmp_path: Path,
    db_url: str,
    servers: list[ServerProcess],
    ledgers: list[subprocess.Popen[bytes]],
) -> None:
    journal = tmp_path / "journal"
    config = write_config(
        tmp_path / "tokenmeter.yaml",
        db_url=db_url,
        journal_dir=journal,
        upstream_base=fakes["vllm"].url + "/v1",
    )
    prepare_postgres(config)
    server = ServerProcess(config, tmp_path, "gw").start()
    servers.append(server)
    # serve's own ledger process is stopped (SIGSTOP: alive, holding its lock, doing nothing)
    os.kill(the_ledger_child(server, journal), signal.SIGSTOP)
    send(server.url, 5, "s-wait")
    time.sleep(1.0)  # 20 flush intervals: an inline writer would have written them
    assert count_events(db_url) == 0
    assert segment_lines(journal) == 5
    # a ledger that holds its lock but does not move is reported, not taken for healthy
    r = wait_for(lambda: (r := server.readyz())[0] == 503 and r, timeout_s=20, interval_s=0.2)
    body = r[1]
    assert "ledger process does not move" in body["writer"], body
    assert body["backlog_events"] == 5 and body["backlog_bytes"] > 0, body
    server.kill()  # serve and its stopped ledger: from here, the journal is all there is
    assert count_events(db_url) == 0

    # `tokenmeter ledger run` on its own drains what the dead processes left
    ledgers.append(start_ledger(config, tmp_path, 1))
    wait_for(lambda: count_events(db_url) == 5, timeout_s=30)
    wait_for(lambda: not list(journal.glob("seg-*.jsonl")), timeout_s=10)  # drained: removed
    ledgers[0].send_signal(signal.SIGTERM)
    assert ledgers[0].wait(15) == 0
    assert_no_duplicates_by_id(db_url, 5)
    assert_rollups_equal_events(db_url)


def assert_no_duplicates_by_id(db_url: str, n: int) -> None:
    [row] = query(db_url, "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids FROM usage_events")
    assert row["n"] == row["ids"] == n, row


def test_a_second_ledger_process_waits_and_takes_over(
    fakes: dict[str, FakeServer],
    tmp_path: Path,
    servers: list[ServerProcess],
    ledgers: list[subprocess.Popen[bytes]],
) -> None:
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    journal = tmp_path / "journal"
    config = write_config(
        tmp_path / "tokenmeter.yaml",
        db_url=db_url,
        journal_dir=journal,
        upstream_base=fakes["vllm"].url + "/v1",
    )
    server = ServerProcess(config, tmp_path, "gw").start()
    servers.append(server)
    first = the_ledger_child(server, journal)
    ledgers.append(second := start_ledger(config, tmp_path, 2))
    wait_for(lambda: b"another ledger process" in (tmp_path / "ledger-2.log").read_bytes())
    send(server.url, 3, "s-first")
    wait_for(lambda: count_events(db_url) == 3)

    os.kill(first, signal.SIGKILL)  # the second takes the lock (serve's restart now waits)
    send(server.url, 4, "s-second")
    wait_for(lambda: count_events(db_url) == 7, timeout_s=30)
    assert "moving" in (tmp_path / "ledger-2.log").read_text()
    assert second.poll() is None
    assert_no_duplicates_by_id(db_url, 7)


KILL_TOTAL = 1200


def test_kill_9_of_the_ledger_process_under_load_loses_nothing(
    fakes: dict[str, FakeServer],
    tmp_path: Path,
    db_url: str,
    servers: list[ServerProcess],
) -> None:
    config = write_config(
        tmp_path / "tokenmeter.yaml",
        db_url=db_url,
        journal_dir=(journal := tmp_path / "journal"),
        upstream_base=fakes["vllm"].url + "/v1",
        batch_max_events=50,  # many small batches: the kills land between and inside them
    )
    prepare_postgres(config)
    server = ServerProcess(config, tmp_path, "gw").start()
    servers.append(server)
    outcomes = [Outcome(new_session("lk9"), stream=i % 3 == 0) for i in range(KILL_TOTAL)]
    kills: list[int] = []
    completed = 0

    def on_done(o: Outcome) -> None:
        nonlocal completed
        completed += o.complete

    def killer() -> None:  # in a thread: the load's event loop never waits for it
        for at in (200, 500, 800):
            wait_for(lambda at=at: completed >= at, timeout_s=120)
            pid = the_ledger_child(server, journal)
            os.kill(pid, signal.SIGKILL)
            kills.append(pid)
            wait_for(lambda pid=pid: not alive(pid))

    async def one(http: aiohttp.ClientSession, o: Outcome) -> Outcome:
        return await chat(http, server.url, o, "[[fake:words=7]] [[fake:chunk_delay=0.002]] hi")

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    asyncio.run(run_load(outcomes, one, concurrency=16, on_done=on_done))
    thread.join(timeout=60)
    assert len(kills) == 3 and len(set(kills)) == 3, kills  # each kill hit a fresh process
    assert all(o.complete for o in outcomes), [o.error for o in outcomes if not o.complete][:5]
    server.wait_drained(timeout_s=60)
    assert assert_no_duplicates(db_url) == KILL_TOTAL
    assert_client_usage_recorded(outcomes, db_url)
    assert_rollups_equal_events(db_url)
    assert server.logs().count("ledger process exited") >= 3


def test_kill_9_of_serve_alone_its_ledger_drains_and_exits(
    fakes: dict[str, FakeServer], tmp_path: Path, servers: list[ServerProcess]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = write_config(
        tmp_path / "tokenmeter.yaml",
        db_url=db_url,
        journal_dir=(journal := tmp_path / "journal"),
        upstream_base=fakes["vllm"].url + "/v1",
        flush_interval_s=5.0,  # the events are still in the journal when serve dies
    )
    server = ServerProcess(config, tmp_path, "gw").start()
    servers.append(server)
    ledger = the_ledger_child(server, journal)
    send(server.url, 6, "s-orphan")
    assert count_events(db_url) == 0  # still in the journal (5 s flush interval)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)  # serve only, not its tree
    server.proc.wait(10)
    wait_for(lambda: not alive(ledger), timeout_s=30)  # it noticed, drained, left
    assert count_events(db_url) == 6
    assert_rollups_equal_events(db_url)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
