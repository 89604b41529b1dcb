"""What rate-limit admission costs per request: no limits, each replica's own buckets, buckets
shared in Redis.

    python bench/ratelimit_store.py [--redis redis://127.0.0.1:6379/0] [--redis-timeout 0.05]
                                    [--calls 20000]
                                    [--duration 10] [--rounds 3] [--conc "1 8"] [--no-e2e]

1. In process: ``RateLimiter.admit`` (the call on the request path) and ``observe`` (the ledger
   listener that debits tokens) ``--calls`` times over 100 keys in 10 teams with limits that
   refuse nothing, from c concurrent tasks; per call p50/p99 in microseconds, and this
   process's CPU time per call.
2. End to end: three ``tokenmeter serve`` (1 worker, journal on) on bench/mock_upstream.py, the
   same config but for ``rate_limits`` (none; per key and team in memory; the same in Redis),
   under bench/loadgen.py, non-streamed chat completions; the three back to back in each round
   (in turns: each runs first in one round of three) so machine drift hits them alike. The
   added latency of a mode is its p50 minus the p50 without limits, in the same round. The
   Redis gateway's /metrics must show the store up and no fallback, or the run is reported as
   failed.

Each run uses a key prefix of its own in Redis; its keys expire within a minute. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import run  # bench/run.py: the processes and servers of the gateway benchmark
from prometheus_client import CollectorRegistry

from cost.usage import TokenUsage
from metering.events import UsageEvent, new_event_id
from proxy.config.settings import RateLimitSettings
from proxy.gateway.governance.ratelimit import RateLimiter

GENEROUS = {"requests_per_minute": 10**9, "tokens_per_minute": 10**12}


def limits(mode: str, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    if mode == "none":
        return {}
    teams = {f"team-{i}": GENEROUS for i in range(10)}
    out: dict[str, Any] = {"per_key": GENEROUS, "teams": teams}
    if mode == "redis":
        out |= {
            "redis_url": args.redis,
            "redis_key_prefix": prefix,
            "redis_timeout_s": args.redis_timeout,
        }
    return out


# --------------------------------------------------------------------------- in process


def event(key: int) -> UsageEvent:
    now = time.time()
    return UsageEvent(
        id=new_event_id(int(now * 1e9)),
        started_at=now,
        finished_at=now,
        key_id=f"key-{key}",
        team=f"team-{key % 10}",
        user="bench",
        agent="bench",
        session="s",
        use_case="bench",
        model="mock-gpt",
        backend="vllm",
        deployment="vllm/mock-gpt",
        upstream_model="mock-gpt",
        on_prem=True,
        stream=False,
        status="ok",
        http_status=200,
        usage=TokenUsage(input_tokens=42, output_tokens=20),
    )


async def admit_calls(mode: str, args: argparse.Namespace, conc: int) -> dict[str, Any]:
    calls = args.calls
    settings = RateLimitSettings(**limits(mode, args, f"bench-{uuid.uuid4().hex[:8]}"))
    limiter = RateLimiter(settings, registry=CollectorRegistry())
    await limiter.start()
    finished = [event(i) for i in range(100)]
    took: list[float] = []

    async def worker(first: int) -> None:
        for i in range(first, calls, conc):
            t0 = time.perf_counter()
            await limiter.admit(key_id=f"key-{i % 100}", team=f"team-{i % 10}")
            took.append(time.perf_counter() - t0)
            limiter.observe(finished[i % 100])

    try:
        cpu = time.process_time()
        await asyncio.gather(*(worker(w) for w in range(conc)))
        cpu = time.process_time() - cpu
        fell_back = limiter.shared is not None and not limiter.shared.up
    finally:
        await limiter.stop()
    q = statistics.quantiles(took, n=100)
    return {
        "mode": mode,
        "conc": conc,
        "calls": calls,
        "p50_us": round(q[49] * 1e6, 1),
        "p99_us": round(q[98] * 1e6, 1),
        "over_50ms": sum(t > 0.05 for t in took),
        # the process's CPU (user + system) per admission and debit: on a shared machine the
        # steadier figure, as waits on other processes inflate the latencies
        "cpu_us_per_call": round(cpu / calls * 1e6, 1),
        "fell_back": fell_back,
    }


# --------------------------------------------------------------------------- end to end


def start_gateway(mode: str, work: Path, mock: str, extra: dict[str, Any]) -> run.Target:
    config = run.tokenmeter_config(work, f"tm-{mode}", mock, request_log=False)
    if extra:
        config.write_text(config.read_text() + "rate_limits: " + json.dumps(extra) + "\n")
    tokenmeter = run.executable("tokenmeter")
    if tokenmeter is None:
        raise SystemExit("tokenmeter not found: pip install -e . (in this interpreter's venv)")
    create = [tokenmeter, "keys", "create", "--user", "bench", "--team", "team-1"]
    created = subprocess.run(
        [*create, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=run.clean_env(),
    )
    if created.returncode != 0:
        raise RuntimeError(f"tokenmeter keys create failed:\n{created.stderr[-2000:]}")
    port = run.free_port()
    target = run.Target(mode, f"http://127.0.0.1:{port}/v1", created.stdout.strip())
    argv = [tokenmeter, "serve", "--config", str(config), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning"]
    run.start_server(target, argv, work, timeout=60)
    return target


def loadgen(target: run.Target, conc: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, str(run.BENCH / "loadgen.py"), "--url", target.url]
    argv += ["--model", "mock-gpt", "--key", target.key, "-c", str(conc)]
    argv += ["-d", str(args.duration), "-w", str(args.warmup)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=args.duration + args.warmup + 30
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed:\n{done.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def store_metrics(target: run.Target) -> dict[str, float]:
    base = target.url.removesuffix("/v1")
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    wanted = ("tokenmeter_rate_limit_store_up", "tokenmeter_rate_limit_fallbacks_total")
    return {
        name: float(value)
        for line in text.splitlines()
        if line.startswith(wanted)
        for name, value in [line.rsplit(" ", 1)]
    }


def end_to_end(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    mock = run.start_mock(work).url.removesuffix("/v1")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    targets = [
        start_gateway(mode, work, mock, limits(mode, args, prefix))
        for mode in ("none", "local", "redis")
    ]
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for conc in args.conc:
            # the order turns every round, so that no mode always runs first
            turn = targets[r % 3 :] + targets[: r % 3]
            cell = {t.label: loadgen(t, conc, args) for t in turn}
            base = cell["none"]["latency_ms"]
            row: dict[str, Any] = {"round": r + 1, "conc": conc}
            for label, res in cell.items():
                lat = res["latency_ms"]
                row[label] = {"rps": res["rps"], "errors": res["errors"], **lat}
                if label != "none":
                    row[label]["added_p50_ms"] = round(lat["p50"] - base["p50"], 3)
                    row[label]["added_p99_ms"] = round(lat["p99"] - base["p99"], 3)
            rounds.append(row)
            print(json.dumps(row), file=sys.stderr)
    return {"rounds": rounds, "redis_gateway_metrics": store_metrics(targets[2])}


def summary(rounds: list[dict[str, Any]], conc: int) -> dict[str, Any]:
    cells = [r for r in rounds if r["conc"] == conc]
    return {
        mode: {
            "median_added_p50_ms": statistics.median(c[mode]["added_p50_ms"] for c in cells),
            "median_added_p99_ms": statistics.median(c[mode]["added_p99_ms"] for c in cells),
        }
        for mode in ("local", "redis")
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument(
        "--redis-timeout",
        type=float,
        default=0.05,
        help="rate_limits.redis_timeout_s (on a loaded machine, raise it to time Redis itself)",
    )
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--conc", default="1 8", help='concurrencies (default "1 8")')
    p.add_argument("--no-e2e", action="store_true", help="only the in-process part")
    args = p.parse_args()
    args.conc = [int(c) for c in args.conc.split()]
    result: dict[str, Any] = {"admit": []}
    for conc in args.conc:
        for mode in ("none", "local", "redis"):
            one = asyncio.run(admit_calls(mode, args, conc))
            print(json.dumps(one), file=sys.stderr)
            result["admit"].append(one)
    if not args.no_e2e:
        with tempfile.TemporaryDirectory(prefix="tm-bench-ratelimit-") as tmp:
            try:
                result["e2e"] = end_to_end(args, Path(tmp))
            finally:
                for proc in reversed(run.STARTED):
                    run.stop(proc)
        result["e2e"]["summary"] = {c: summary(result["e2e"]["rounds"], c) for c in args.conc}
        m = result["e2e"]["redis_gateway_metrics"]
        if m.get("tokenmeter_rate_limit_store_up") != 1.0 or any(
            v for k, v in m.items() if k.startswith("tokenmeter_rate_limit_fallbacks_total")
        ):
            print("the Redis gateway fell back: its numbers are not Redis's", file=sys.stderr)
            print(json.dumps(result, indent=1))
            return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
