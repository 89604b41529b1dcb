"""The gateway benchmark in one command: tokenmeter (1 and 2 workers) against a fast mock upstream,
beside the mock itself and, optionally, the LiteLLM proxy.

    python bench/run.py [--quick] [--duration S] [--conc "1 8 64"] [--litellm]
                        [--translation-only] [--request-log on|off] [--out DIR]

Starts bench/mock_upstream.py, writes a throw-away tokenmeter config (SQLite ledger, journal on)
and a key, starts `tokenmeter serve` with 1 and with 2 workers (timing spawn -> first 200 on a
chat completion), then runs bench/loadgen.py for every mode x concurrency x target, the targets
of one cell back to back so machine drift hits them equally. `direct` (the load generator
straight at the mock) is the baseline the added latencies are computed against. The translation
paths (OpenAI in, Anthropic upstream; Anthropic in, vLLM upstream; /v1/responses in,
vLLM upstream) and the Anthropic pass-through are compared with the Chat pass-through at
c=8 by CPU time per request (--translation-only: just those). The process tree of each
server is sampled from /proc every 0.5 s (CPU, summed RSS). While one server is measured, the
other servers are paused (SIGSTOP of their process groups, SIGCONT after the window): on a
2-core machine their idle timers would otherwise share the cores with the one measured, and
any CPU beside the request chain shows in its c=1 tail (docs/performance.md); --others
running keeps them running. --placement chain (the default on 2+ CPUs) runs the 1-worker
tokenmeter with `serve --cpus FIRST --ledger-cpus LAST` and, at c=1, the load generator and the
mock on FIRST too: the request chain on one CPU, the ledger on another (on a 2-vCPU guest, hops
of the chain across the vCPUs make the c=1 tail; docs/performance.md); --placement free lets
the kernel place everything. Writes report.md and results.json to --out and prints the report.

Everything binds to 127.0.0.1 on free ports; only the processes started here are stopped, by
process group, on exit, Ctrl-C or error. --quick: c = 1 64, 3 s windows after 1 s warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
MODES = ("nonstream", "stream")
TRANSLATION_CONC = 8

Run = dict[str, Any]
STARTED: list[subprocess.Popen[bytes]] = []  # stopped on exit, newest first
SERVERS: list[subprocess.Popen[bytes]] = []  # the proxies, paused while another is measured
PAUSE_OTHERS = True  # --others paused
# --placement chain: (the serving chain's CPU, the ledger's); None when free
CHAIN: tuple[int, int] | None = None
MOCK: list[subprocess.Popen[bytes]] = []  # the mock upstream's process
NOTES: list[str] = []  # for the report


@dataclass
class Target:
    """Something the load generator is pointed at; `proc` is None for the mock itself."""

    label: str
    url: str  # OpenAI-style base URL
    key: str = "sk-bench"
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start argv as the leader of its own process group, output to log."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started; SIGKILL whatever is left of it after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)  # a paused group would hold the SIGTERM
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without settings that would override the bench config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKENMETER_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    return {**env, **extra}


def chat_status(url: str, model: str, key: str) -> int:
    """Status of one small non-streamed chat completion at an OpenAI-style base URL."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 8}
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    try:
        conn.request("POST", parts.path + "/chat/completions", json.dumps(body), headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_ready(target: Target, spawned: float, timeout: float, log: Path) -> float:
    """Seconds from spawn to the first 200 on a chat completion, polled every 50 ms."""
    assert target.proc is not None
    while time.monotonic() - spawned < timeout:
        if target.proc.poll() is not None:
            raise RuntimeError(f"{target.label} exited with {target.proc.returncode}, see {log}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if chat_status(target.url, "mock-gpt", target.key) == 200:
                return round(time.monotonic() - spawned, 2)
        time.sleep(0.05)
    raise RuntimeError(f"{target.label} not serving after {timeout:.0f} s, see {log}")


def start_server(target: Target, argv: list[str], out: Path, timeout: float, **env: str) -> None:
    """Spawn a proxy, time it to its first served request, and register it for cleanup."""
    log = out / f"{target.label}.log"
    spawned = time.monotonic()
    target.proc = spawn(argv, log, clean_env(**env))
    STARTED.append(target.proc)
    SERVERS.append(target.proc)
    target.startup_s = wait_ready(target, spawned, timeout, log)
    print(f"{target.label} serving after {target.startup_s} s", file=sys.stderr)


# --------------------------------------------------------------------------- /proc sampling


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat:
                kids.setdefault(int(stat[1]), []).append(int(entry))
    return kids


def read_stat(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name (state first), [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return raw[raw.rfind(b")") + 2 :].split()


def tree_usage(root: int, kids: dict[int, list[int]]) -> tuple[int, int]:
    """(utime + stime ticks, resident pages) summed over root and its descendants."""
    ticks = pages = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stat = read_stat(pid)
        if stat:
            ticks += int(stat[11]) + int(stat[12])
            pages += int(stat[21])
        stack.extend(kids.get(pid, []))
    return ticks, pages


class Sampler(threading.Thread):
    """CPU ticks and RSS of every watched process tree, every 0.5 s, on the monotonic clock; the
    trees (which processes descend from each server) are mapped again every REMAP_S."""

    REMAP_S = 5.0

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.roots: dict[str, int] = {}
        self.samples: dict[str, list[tuple[float, int, int]]] = {}
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.kids: dict[int, list[int]] = {}
        self.mapped_at = -math.inf

    def watch(self, label: str, pid: int) -> None:
        self.samples[label] = []
        self.roots[label] = pid
        self.mapped_at = -math.inf  # the next sample maps the trees again

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(0.5)

    def sample(self) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.mapped_at > self.REMAP_S:  # a scan of all of /proc: 1-2 ms of CPU
                self.kids, self.mapped_at = children_map(), now
            for label, pid in list(self.roots.items()):
                self.samples[label].append((now, *tree_usage(pid, self.kids)))

    def cpu_s(self, label: str, t0: float, t1: float) -> float:
        """CPU seconds of the tree between t0 and t1, interpolated between samples."""
        return (self._ticks_at(label, t1) - self._ticks_at(label, t0)) / TICKS

    def _ticks_at(self, label: str, t: float) -> float:
        samples = self.samples[label]
        for (ta, a, _), (tb, b, _) in itertools.pairwise(samples):
            if ta <= t <= tb:
                return a + (b - a) * (t - ta) / (tb - ta) if tb > ta else b
        return float(samples[-1][1] if t > samples[-1][0] else samples[0][1])

    def peak_rss_mb(self, label: str, t0: float, t1: float) -> float:
        inside = [pages for t, _, pages in self.samples[label] if t0 - 0.5 <= t <= t1 + 0.5]
        return round(max(inside, default=0) * PAGE_MB, 1)


# --------------------------------------------------------------------------- measuring


@contextlib.contextmanager
def alone(target: Target) -> Iterator[None]:
    """The servers other than ``target`` paused for the block (unless --others running)."""
    others = [p for p in SERVERS if p is not target.proc] if PAUSE_OTHERS else []
    paused = []
    try:
        for proc in others:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGSTOP)
                paused.append(proc)
        yield
    finally:
        for proc in paused:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)


def set_cpus(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus``."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), cpus)


@contextlib.contextmanager
def placed(pid: int, cpu: int | None) -> Iterator[None]:
    """``pid`` (the mock) on ``cpu`` for the block, then back on every CPU; None: left alone."""
    if cpu is None:
        yield
        return
    set_cpus(pid, {cpu})
    try:
        yield
    finally:
        set_cpus(pid, os.sched_getaffinity(0))


def measure(
    target: Target,
    model: str,
    mode: str,
    conc: int,
    args: argparse.Namespace,
    sampler: Sampler,
    api: str = "openai",
) -> Run:
    """One loadgen run against one target, with the target's CPU and RSS over the window."""
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--url", target.url, "--model", model]
    argv += ["--key", target.key, "-c", str(conc), "-d", str(args.duration), "--api", api]
    argv += ["-w", str(args.warmup), *(["--stream"] if mode == "stream" else [])]
    chain_cpu = CHAIN[0] if CHAIN is not None and conc == 1 else None  # --placement chain
    argv += ["--cpu", str(chain_cpu)] if chain_cpu is not None else []
    print(f"  {mode:<9} c={conc:<3} {target.label:<14} {api:<9} {model}", file=sys.stderr, end=" ")
    with alone(target), placed(MOCK[0].pid, chain_cpu):
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=args.warmup + args.duration + 30
        )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed:\n{done.stderr[-2000:]}")
    run: Run = {"target": target.label, "mode": mode, "conc": conc, **json.loads(done.stdout)}
    if target.proc is not None:
        sampler.sample()  # one after the window, to interpolate its end
        t0, t1 = run["window"]
        cpu = sampler.cpu_s(target.label, t0, t1)
        run["cpu_pct"] = round(cpu / (t1 - t0) * 100, 1)
        run["cpu_ms_per_request"] = (
            round(cpu * 1e3 / run["requests"], 3) if run["requests"] else None
        )
        run["peak_rss_mb"] = sampler.peak_rss_mb(target.label, t0, t1)
    print(f"{run['rps']:>9,.0f} rps  errors {run['errors']}", file=sys.stderr)
    return run


def run_matrix(targets: list[Target], args: argparse.Namespace, sampler: Sampler) -> list[Run]:
    """Every mode x concurrency, all targets of a cell back to back."""
    return [
        measure(target, "mock-gpt", mode, conc, args, sampler)
        for mode in MODES
        for conc in args.conc
        for target in targets
    ]


# (client API, model): both pass-throughs and both translations, on the same mock; the first
# is the baseline of the table and the checks
TRANSLATION_PATHS = {
    ("openai", "mock-gpt"): "Chat pass-through (OpenAI in, vLLM upstream)",
    ("openai", "mock-claude"): "Chat → Messages (OpenAI in, Anthropic upstream)",
    ("anthropic", "mock-claude"): "Messages pass-through (Anthropic in, Anthropic upstream)",
    ("anthropic", "mock-gpt"): "Messages → Chat (Anthropic in, vLLM upstream)",
    ("responses", "mock-gpt"): "Responses → Chat (/v1/responses in, vLLM upstream)",
}


TRANSLATION_ROUNDS = 3  # rounds of every path, interleaved; the table takes each one's median


def run_translation(target: Target, args: argparse.Namespace, sampler: Sampler) -> list[Run]:
    """Each translation beside the pass-through of the same upstream call, at c=8, in rounds
    (every path once, then again), so the machine's drift over the minutes this takes hits every
    path alike; each path's round of median CPU per request, with every round's figure."""
    rounds: dict[tuple[str, str, str], list[Run]] = {}
    for mode in MODES:
        for _ in range(TRANSLATION_ROUNDS):
            for api, model in TRANSLATION_PATHS:
                run = measure(target, model, mode, TRANSLATION_CONC, args, sampler, api)
                rounds.setdefault((mode, api, model), []).append(run)
    return [median_round(runs) for runs in rounds.values()]


def median_round(runs: list[Run]) -> Run:
    ranked = sorted(runs, key=lambda r: r.get("cpu_ms_per_request") or math.inf)
    median = dict(ranked[len(ranked) // 2])
    median["rounds_cpu_ms_per_request"] = [r.get("cpu_ms_per_request") for r in runs]
    return median


# --------------------------------------------------------------------------- the servers


def executable(name: str) -> str | None:
    """name next to this interpreter (an activated or not venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


LEDGER = "process"  # storage.ledger of the tokenmeter instances (--ledger)


def tokenmeter_config(work: Path, name: str, mock: str, *, request_log: bool = True) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(
        f"""auth:
  admin_key: bench-admin-key
request_log:
  enabled: {"true" if request_log else "false"}
metrics:
  overhead_header: true
storage:
  url: sqlite:///{work / name}.db
  journal: true
  journal_dir: {work / name}-journal
  ledger: {LEDGER}
models:
  - name: mock-gpt
    deployments:
      - {{backend: vllm, model: mock-gpt, api_base: "{mock}/v1"}}
  - name: mock-claude
    deployments:
      - {{backend: anthropic, model: mock-claude, api_base: "{mock}"}}
"""
    )
    return path


def start_tokenmeter(
    workers: int, work: Path, mock: str, out: Path, *, request_log: bool = True
) -> Target:
    """A tokenmeter instance with its own ledger and key, serving; at INFO, so that its
    request log (one JSON line per request, to its output file) is on unless turned off."""
    tokenmeter = executable("tokenmeter")
    if tokenmeter is None:
        raise SystemExit("tokenmeter not found: pip install -e . (in this interpreter's venv)")
    config = str(tokenmeter_config(work, f"tokenmeter-{workers}w", mock, request_log=request_log))
    create = [tokenmeter, "keys", "create", "--user", "bench", "--config", config]
    created = subprocess.run(create, capture_output=True, text=True, timeout=120, env=clean_env())
    if created.returncode != 0:
        raise RuntimeError(f"tokenmeter keys create failed:\n{created.stderr[-2000:]}")
    port = free_port()
    target = Target(f"tokenmeter-{workers}w", f"http://127.0.0.1:{port}/v1", created.stdout.strip())
    argv = [tokenmeter, "serve", "--config", config, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--log-level", "info", "--workers", str(workers)]
    if CHAIN is not None and workers == 1:  # tokenmeter's own placement, in every cell
        argv += ["--cpus", str(CHAIN[0]), "--ledger-cpus", str(CHAIN[1])]
    start_server(target, argv, out, timeout=60)
    return target


def start_litellm(args: argparse.Namespace, work: Path, mock: str, out: Path) -> Target | None:
    """The LiteLLM proxy (1 worker) on the mock, or None with a note when it is not available."""
    command = shlex.split(args.litellm_cmd) if args.litellm_cmd else None
    found = shutil.which("litellm")
    command = command or ([found] if found else None)
    if command is None:
        NOTES.append("LiteLLM skipped: no `litellm` on PATH and no --litellm-cmd.")
        return None
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: mock-gpt\n    litellm_params:\n"
        f"      {{model: openai/mock-gpt, api_base: '{mock}/v1', api_key: x}}\n"
    )
    port = free_port()
    target = Target("litellm", f"http://127.0.0.1:{port}/v1")
    argv = [*command, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    try:
        start_server(target, argv, out, timeout=180, **env)
    except (RuntimeError, OSError) as exc:
        if target.proc is not None:
            stop(target.proc)
        NOTES.append(f"LiteLLM skipped: {exc}")
        return None
    return target


def start_mock(out: Path) -> Target:
    port = free_port()
    proc = spawn(
        [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(port)], out / "mock.log"
    )
    STARTED.append(proc)
    MOCK.append(proc)
    for _ in range(200):
        with contextlib.suppress(OSError, http.client.HTTPException):
            if chat_status(f"http://127.0.0.1:{port}/v1", "mock-gpt", "x") == 200:
                return Target("direct", f"http://127.0.0.1:{port}/v1")
        time.sleep(0.05)
    raise RuntimeError(f"the mock upstream did not start, see {out / 'mock.log'}")


# --------------------------------------------------------------------------- the report


def find(
    runs: list[Run],
    target: str,
    mode: str,
    conc: int,
    model: str = "mock-gpt",
    api: str = "openai",
) -> Run | None:
    want = (target, mode, conc, model, api)
    return next(
        (
            r
            for r in runs
            if (r["target"], r["mode"], r["conc"], r["model"], r.get("api", "openai")) == want
        ),
        None,
    )


def pct(run: Run | None, metric: str, point: str) -> float | None:
    block = run.get(metric) if run else None
    return block[point] if block else None


def added(runs: list[Run], run: Run, metric: str, point: str) -> float | None:
    """A target's percentile minus the direct-to-mock one of the same cell."""
    if run["target"] == "direct":
        return None
    mine = pct(run, metric, point)
    direct = pct(find(runs, "direct", run["mode"], run["conc"]), metric, point)
    return None if mine is None or direct is None else round(mine - direct, 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def matrix_table(runs: list[Run]) -> list[str]:
    lines = [
        "| mode | c | target | rps | p50 ms | p99 ms | +p50 ms | +p99 ms | TTFC p50 ms "
        "| +TTFC p50 ms | CPU % | peak RSS MB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        stream = r["mode"] == "stream"
        cells = [
            r["mode"],
            str(r["conc"]),
            r["target"],
            num(r["rps"], 0),
            num(pct(r, "latency_ms", "p50")),
            num(pct(r, "latency_ms", "p99")),
            num(added(runs, r, "latency_ms", "p50")),
            num(added(runs, r, "latency_ms", "p99")),
            num(pct(r, "ttfc_ms", "p50")) if stream else "–",
            num(added(runs, r, "ttfc_ms", "p50")) if stream else "–",
            num(r.get("cpu_pct"), 0),
            num(r.get("peak_rss_mb"), 0),
            str(r["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def translation_table(runs: list[Run]) -> list[str]:
    lines = [
        f"| mode (c={TRANSLATION_CONC}) | path | rps | CPU ms / request | vs pass-through "
        "| rounds (CPU ms / request) | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        api = r.get("api", "openai")
        base = find(runs, r["target"], r["mode"], r["conc"])
        path = TRANSLATION_PATHS[(api, r["model"])]
        vs = ratio(r.get("cpu_ms_per_request"), base and base.get("cpu_ms_per_request"))
        cells = [r["mode"], path, num(r["rps"], 0), num(r.get("cpu_ms_per_request"), 3)]
        each = ", ".join(num(x, 3) for x in r.get("rounds_cpu_ms_per_request", []))
        lines.append("| " + " | ".join([*cells, f"{num(vs)}×", each, str(r["errors"])]) + " |")
    return lines


@dataclass(frozen=True)
class Check:
    """One target of the issue: `value` must be at most (or at least) `limit`."""

    what: str
    value: float | None
    limit: float
    unit: str
    at_most: bool = True

    @property
    def ok(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    @property
    def name(self) -> str:
        return f"{self.what} {'≤' if self.at_most else '≥'} {self.limit:.3g}{self.unit}"


def checks(res: dict[str, Any]) -> list[Check]:
    """Every target of the issue that the results allow to compute (the others: value None)."""
    runs, tr, startup = res["runs"], res["translation"], res["startup_s"]
    tm, tm2 = "tokenmeter-1w", "tokenmeter-2w"

    def add(mode: str, metric: str, point: str) -> float | None:
        run = find(runs, tm, mode, 1)
        return added(runs, run, metric, point) if run else None

    def tail(mode: str, metric: str) -> float | None:
        """p99 / p50 of the added latency (TTFC when streaming) at c=1."""
        return ratio(add(mode, metric, "p99"), add(mode, metric, "p50"))

    def own_tail(mode: str) -> float | None:
        """p99 / p50 of the gateway's own time at c=1 (its x-tokenmeter-overhead-ms)."""
        run = find(runs, tm, mode, 1)
        return ratio(pct(run, "own_ms", "p99"), pct(run, "own_ms", "p50"))

    def rps(target: str, mode: str, conc: int = 64) -> float | None:
        run = find(runs, target, mode, conc)
        return run["rps"] if run else None

    def cpu_ratio(mode: str, model: str = "mock-claude", api: str = "openai") -> float | None:
        a = find(tr, tm, mode, TRANSLATION_CONC, model, api)
        b = find(tr, tm, mode, TRANSLATION_CONC)
        return ratio(a and a.get("cpu_ms_per_request"), b and b.get("cpu_ms_per_request"))

    def messages_ratio(mode: str) -> float | None:
        a = find(tr, tm, mode, TRANSLATION_CONC, "mock-gpt", "anthropic")
        b = find(tr, tm, mode, TRANSLATION_CONC, "mock-gpt", "openai")
        return ratio(a and a.get("cpu_ms_per_request"), b and b.get("cpu_ms_per_request"))

    out = [
        Check("added p50, c=1 non-stream", add("nonstream", "latency_ms", "p50"), 0.5, " ms"),
        Check("added p99, c=1 non-stream", add("nonstream", "latency_ms", "p99"), 1.5, " ms"),
        Check("added TTFC p50, c=1 stream", add("stream", "ttfc_ms", "p50"), 0.5, " ms"),
        Check("added p99 / added p50, c=1 non-stream", tail("nonstream", "latency_ms"), 2.5, "×"),
        Check("added TTFC p99 / p50, c=1 stream", tail("stream", "ttfc_ms"), 2.5, "×"),
        Check("own time p99 / p50, c=1 non-stream", own_tail("nonstream"), 2.5, "×"),
        Check("own time p99 / p50, c=1 stream", own_tail("stream"), 2.5, "×"),
        Check("translation / pass-through CPU per request, c=8 non-stream",
              cpu_ratio("nonstream"), 2, "×"),
        Check("translation / pass-through CPU per request, c=8 stream",
              cpu_ratio("stream"), 2, "×"),
        Check("/v1/responses / chat pass-through CPU per request, c=8 non-stream",
              cpu_ratio("nonstream", "mock-gpt", "responses"), 1.5, "×"),
        Check("/v1/responses / chat pass-through CPU per request, c=8 stream",
              cpu_ratio("stream", "mock-gpt", "responses"), 1.5, "×"),
        Check("Messages → Chat / Chat pass-through CPU per request, c=8 non-stream",
              messages_ratio("nonstream"), 1.5, "×"),
        Check("Messages → Chat / Chat pass-through CPU per request, c=8 stream",
              messages_ratio("stream"), 1.5, "×"),
        Check("spawn to first served request", startup.get(tm), 1.5, " s"),
        Check("2 workers / 1 worker rps, c=64 non-stream",
              ratio(rps(tm2, "nonstream"), rps(tm, "nonstream")), 1.7, "×", at_most=False),
        Check("2 workers / 1 worker rps, c=64 stream",
              ratio(rps(tm2, "stream"), rps(tm, "stream")), 1.7, "×", at_most=False),
    ]  # fmt: skip
    if "litellm" in startup:
        peak = {
            t: max((r.get("peak_rss_mb") or 0 for r in runs if r["target"] == t), default=0)
            for t in (tm, "litellm")
        }
        out += [
            Check("rps / LiteLLM's, c=64 non-stream",
                  ratio(rps(tm, "nonstream"), rps("litellm", "nonstream")), 40, "×", at_most=False),
            Check("rps / LiteLLM's, c=64 stream",
                  ratio(rps(tm, "stream"), rps("litellm", "stream")), 90, "×", at_most=False),
            Check("peak RSS / LiteLLM's", ratio(peak[tm], peak["litellm"]), 1 / 3, "×"),
        ]  # fmt: skip
    return out


def checks_table(res: dict[str, Any]) -> list[str]:
    lines = ["| target (tokenmeter, 1 worker unless said) | measured | |", "|---|---|---|"]
    for check in checks(res):
        verdict = {None: "–", True: "✓", False: "✗"}[check.ok]
        shown = "not measured" if check.value is None else f"{check.value:g}{check.unit}"
        lines.append(f"| {check.name} | {shown} | {verdict} |")
    return lines


def render(res: dict[str, Any]) -> str:
    m, s = res["machine"], res["settings"]
    startup = ", ".join(f"{k} {v} s" for k, v in res["startup_s"].items())
    return "\n".join(
        [
            "# tokenmeter gateway benchmark",
            "",
            f"{m['date']} · commit {m['commit']} · Python {m['python']} · nproc {m['nproc']} "
            f"({m['cpu']}) · {s['duration']} s windows after {s['warmup']} s warm-up · "
            f"request log {s.get('request_log', 'off')} · other servers "
            f"{s.get('others', 'running')} during a window · placement "
            f"{s.get('placement', 'free')}",
            "",
            "## Targets",
            "",
            *checks_table(res),
            "",
            f"Start-up, spawn to first served chat completion: {startup}.",
            "",
            "## Matrix",
            "",
            "`+` = minus `direct` (the load generator straight at the mock) in the same cell. "
            "TTFC = time to first content chunk. CPU % (100 = one core) and peak RSS (summed "
            "over processes) are of the server's process tree during the window.",
            "",
            *matrix_table(res["runs"]),
            "",
            "## Translations vs the Chat pass-through",
            "",
            "CPU of the server's process tree per request, each path against the same mock, "
            f"in {TRANSLATION_ROUNDS} interleaved rounds (each path's median round shown); "
            "`vs pass-through` divides by the Chat pass-through (OpenAI in, vLLM upstream).",
            "",
            *translation_table(res["translation"]),
            *(["", "## Notes", "", *(f"- {n}" for n in res["notes"])] if res["notes"] else []),
            "",
        ]
    )


# --------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": names[0] if names else "unknown CPU",
        "python": platform.python_version(),
        "commit": commit + (" (uncommitted changes)" if dirty else ""),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help='c "1 64", 3 s windows, 1 s warm-up')
    parser.add_argument("--duration", type=float, help="measurement window, s (default 10)")
    parser.add_argument("--warmup", type=float, help="warm-up per run, s (default 2)")
    parser.add_argument("--conc", help='concurrencies (default "1 8 64")')
    parser.add_argument("--litellm", action="store_true", help="also measure the LiteLLM proxy")
    parser.add_argument(
        "--translation-only",
        action="store_true",
        help="only the translation table: one 1-worker tokenmeter, no matrix",
    )
    parser.add_argument("--litellm-cmd", help="command that runs the LiteLLM CLI")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument(
        "--request-log", choices=["on", "off"], default="on", help="tokenmeter's JSON request log"
    )
    parser.add_argument(
        "--ledger",
        choices=["process", "inline"],
        default="process",
        help="storage.ledger: a ledger process (default) or the writer in each worker",
    )
    parser.add_argument(
        "--others",
        choices=["paused", "running"],
        default="paused",
        help="the servers not being measured: paused during each window (default) or running",
    )
    parser.add_argument(
        "--placement",
        choices=["chain", "free"],
        default="chain",
        help="chain (default, on 2+ CPUs): the 1-worker tokenmeter serves on the first CPU with "
        "its ledger process on the last (serve --cpus, --ledger-cpus), and at c=1 the load "
        "generator and the mock run on that first CPU too; free: the kernel places everything",
    )
    args = parser.parse_args()
    global LEDGER, PAUSE_OTHERS, CHAIN
    LEDGER = args.ledger
    PAUSE_OTHERS = args.others == "paused"
    CHAIN = chain_cpus() if args.placement == "chain" else None
    if args.placement == "chain" and CHAIN is None:
        NOTES.append("--placement chain needs two CPUs; this machine gave one: placement free.")
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.conc = [int(c) for c in (args.conc or ("1 64" if args.quick else "1 8 64")).split()]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out = args.out or Path(tempfile.gettempdir()) / "tokenmeter-bench" / f"run-{stamp}"
    return args


def chain_cpus() -> tuple[int, int] | None:
    """The serving chain's CPU and the ledger's: the first and the last this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[-1]) if len(cpus) > 1 else None


def placement() -> str:
    if CHAIN is None:
        return "free (the kernel places every process)"
    chain, ledger = CHAIN
    return (
        f"chain (tokenmeter-1w: workers on CPU {chain}, ledger on CPU {ledger}; at c=1 the load "
        f"generator and the mock on CPU {chain} too; the other servers free)"
    )


def interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def bench(args: argparse.Namespace, work: Path, sampler: Sampler) -> dict[str, Any]:
    """Start everything, measure, and return the results."""
    direct = start_mock(args.out)
    mock = direct.url.removesuffix("/v1")
    log = args.request_log == "on"
    workers = (1,) if args.translation_only else (1, 2)
    targets = [
        direct,
        *(start_tokenmeter(w, work, mock, args.out, request_log=log) for w in workers),
    ]
    litellm = args.litellm and not args.translation_only
    if litellm and (server := start_litellm(args, work, mock, args.out)):
        targets.append(server)
    for t in targets[1:]:
        assert t.proc is not None
        sampler.watch(t.label, t.proc.pid)
    sampler.start()
    print(f"matrix: {len(args.conc) * len(MODES) * len(targets)} runs", file=sys.stderr)
    runs = [] if args.translation_only else run_matrix(targets, args, sampler)
    print("translation", file=sys.stderr)
    translation = run_translation(targets[1], args, sampler)
    for r in (*runs, *translation):
        if r["errors"]:
            NOTES.append(f"{r['target']} {r['mode']} c={r['conc']} {r['model']}: errors "
                         f"{r['error_kinds']}, e.g. {r['error_samples'][:1]}")  # fmt: skip
    return {
        "machine": machine(),
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "conc": args.conc,
            "request_log": args.request_log,
            "ledger": args.ledger,
            "others": args.others,
            "placement": placement(),
        },
        "startup_s": {t.label: t.startup_s for t in targets[1:]},
        "runs": runs,
        "translation": translation,
        "notes": NOTES,
    }


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix="tokenmeter-bench-"))
    sampler = Sampler()
    try:
        res = bench(args, work, sampler)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        sampler.done.set()
        for proc in reversed(STARTED):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    res["checks"] = [{"target": c.name, "measured": c.value, "ok": c.ok} for c in checks(res)]
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    report = render(res)
    (args.out / "report.md").write_text(report)
    print(report)
    print(f"results: {args.out}/report.md, results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
