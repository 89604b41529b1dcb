"""``serve --cpus`` and ``--ledger-cpus``: the workers and the ledger process run where they are
told (read back from /proc), a restarted ledger process too, requests are served and metered,
and a bad value is one line and exit code 2 before anything starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import text

from metering.store import create_db_engine
from proxy.cli.cpus import format_cpus, parse_cpus
from tests.durability_support import ServerProcess, _clean_env
from tests.support import wait_for

ALLOWED = sorted(os.sched_getaffinity(0))
FIRST, LAST = ALLOWED[0], ALLOWED[-1]  # one CPU apart on any machine of two or more


@pytest.mark.parametrize(
    ("spec", "cpus"),
    [
        ("0", {0}),
        ("3", {3}),
        ("0-3", {0, 1, 2, 3}),
        ("0-3,6", {0, 1, 2, 3, 6}),
        (" 1 , 4-5 ", {1, 4, 5}),
        ("2,2,1-2", {1, 2}),
        ("7-7", {7}),
    ],
)
def test_cpu_lists_read_as_taskset_writes_them(spec, cpus):
    assert parse_cpus(spec) == cpus


@pytest.mark.parametrize("spec", ["", "x", "1,", ",1", "-1", "1-", "3-1", "1.5", "0x1", "1-2-3"])
def test_a_malformed_cpu_list_says_what_is_wrong(spec):
    with pytest.raises(ValueError, match=r"not a CPU number|runs backwards"):
        parse_cpus(spec)


@pytest.mark.parametrize(
    ("cpus", "text_"), [({0}, "0"), ({0, 1, 2, 5}, "0-2,5"), ({1, 3, 4, 5, 9}, "1,3-5,9")]
)
def test_cpu_lists_are_written_as_ranges(cpus, text_):
    assert format_cpus(cpus) == text_
    assert parse_cpus(text_) == cpus


def config(tmp_path: Path, **storage_: str) -> Path:
    path = tmp_path / "tm.yaml"
    storage = {"url": f"sqlite:///{tmp_path / 'tm.db'}", "journal_dir": str(tmp_path / "j")}
    storage |= storage_
    path.write_text(yaml.safe_dump({"storage": storage, "auth": {"required": False}}))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--cpus", "99999"], "--cpus '99999': CPU 99999 is not one this process may use"),
        (["serve", "--ledger-cpus", "0-"], "--ledger-cpus '0-': '0-' is not a CPU number"),
        (["serve", "--cpus", "2-1"], "--cpus '2-1': the range '2-1' runs backwards"),
        (["ledger", "run", "--cpus", "99999"], "--cpus '99999': CPU 99999 is not one"),
    ],
)
def test_a_bad_cpu_list_is_one_line_and_exit_2(tmp_path, args, message):
    done = subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--config", str(config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}")
    assert not (tmp_path / "tm.db").exists()  # refused before the ledger was opened


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def cpus_of(pid: int) -> set[int]:
    """The CPUs of the process's main thread, as the kernel reports them."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return set(parse_cpus(line.split(":", 1)[1]))
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def threads_cpus(pid: int) -> list[set[int]]:
    return [cpus_of(int(t)) for t in os.listdir(f"/proc/{pid}/task")]


def ledger_of(server: ServerProcess, not_: int | None = None) -> int | None:
    """serve's ledger process (not ``not_``); None while there is none."""
    found = [p for p in server.children() if p != not_ and " ledger run " in cmdline(p)]
    assert len(found) <= 1, found
    return found[0] if found else None


def metered(tmp_path: Path) -> int:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'tm.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM usage_events")).scalar_one())
    finally:
        engine.dispose()


@contextmanager
def serving(tmp_path: Path, *args: str, **storage: str) -> Iterator[ServerProcess]:
    """``tokenmeter serve ARGS`` on the simulated backends, stopped after the block."""
    server = ServerProcess(config(tmp_path, **storage), tmp_path, args=args).start(timeout_s=60)
    try:
        yield server
    finally:
        server.stop()


def ask(url: str) -> None:
    body = {"model": "claude-haiku", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text


def test_workers_and_the_ledger_run_on_their_cpus_and_a_restarted_ledger_too(tmp_path):
    args = ("--workers", "2", "--cpus", str(FIRST), "--ledger-cpus", str(LAST))
    with serving(tmp_path, *args) as server:
        workers = wait_for(
            lambda: [p for p in server.children() if "spawn_main" in cmdline(p)] or None
        )
        assert len(workers) == 2
        for worker in workers:
            assert all(cpus == {FIRST} for cpus in threads_cpus(worker)), worker
        ledger = wait_for(lambda: ledger_of(server))
        assert f"--cpus {LAST}" in cmdline(ledger)
        assert all(cpus == {LAST} for cpus in threads_cpus(ledger))
        for _ in range(3):
            ask(server.url)
        wait_for(lambda: metered(tmp_path) == 3, timeout_s=20)

        os.kill(ledger, signal.SIGKILL)  # the supervisor starts another, on the same CPUs
        again = wait_for(lambda: ledger_of(server, not_=ledger), timeout_s=30)
        wait_for(lambda: len(threads_cpus(again)) > 1)  # it has started its own threads
        assert all(cpus == {LAST} for cpus in threads_cpus(again))
        ask(server.url)
        wait_for(lambda: metered(tmp_path) == 4, timeout_s=20)


def test_with_only_the_workers_pinned_the_ledger_keeps_every_cpu_serve_had(tmp_path):
    with serving(tmp_path, "--cpus", str(FIRST)) as server:
        assert cpus_of(server.pid) == {FIRST}  # its main thread serves (one worker)
        ledger = wait_for(lambda: ledger_of(server))
        assert all(cpus == set(ALLOWED) for cpus in threads_cpus(ledger))
        ask(server.url)
        wait_for(lambda: metered(tmp_path) == 1, timeout_s=20)


def test_unpinned_serve_leaves_every_process_its_cpus(tmp_path):
    with serving(tmp_path) as server:
        assert all(cpus == set(ALLOWED) for cpus in threads_cpus(server.pid))
        ledger = wait_for(lambda: ledger_of(server))
        assert " --cpus " not in cmdline(ledger)
        assert all(cpus == set(ALLOWED) for cpus in threads_cpus(ledger))
        ask(server.url)


def test_ledger_cpus_without_a_ledger_process_is_a_warning(tmp_path):
    args = ("--cpus", str(FIRST), "--ledger-cpus", str(LAST))
    with serving(tmp_path, *args, ledger="inline") as server:
        assert ledger_of(server) is None
        assert cpus_of(server.pid) == {FIRST}  # the worker, which writes the database itself
        ask(server.url)
        wait_for(lambda: metered(tmp_path) == 1, timeout_s=20)
        logs = server.logs()
    [warning] = [x for x in logs.splitlines() if "--ledger-cpus" in x]
    assert "WARNING" in warning and "no ledger process to place" in warning
