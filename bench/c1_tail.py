"""What makes the c=1 tail: added p50/p99 of one 1-worker tokenmeter with its ledger process
running, stopped (SIGSTOP), or stopped while a CPU burner imitates it.

    python bench/c1_tail.py [--rounds 2] [--duration 8] [--placement chain|free] [COND ...]

COND is ``normal`` (the ledger running), ``stopped`` (the ledger SIGSTOPped: nothing but the
serving path uses the CPU), or ``burn:BUSY:SLEEP[:nice|:idle]`` (the ledger stopped and a process
spinning BUSY seconds then sleeping SLEEP, at normal priority, nice 19 or SCHED_IDLE), e.g.
``burn:0.022:0.178`` for 11 % of a core in 22 ms bursts. Default: normal stopped. Each condition
runs bench/loadgen.py at c=1, non-stream then stream, straight at the mock and then through
tokenmeter, and prints added p50 and p99 (TTFC when streaming) and their ratio. Everything binds
to 127.0.0.1; the ledger is resumed (SIGCONT) after each condition and all is stopped at the end.
With ``--placement chain`` (the default, as in bench/run.py) the load generator, the mock and
tokenmeter's worker run on the first CPU and its ledger process on the last; a burner runs
where the kernel puts it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench

BURNER = (
    "import sys, time\n"
    "busy, rest = float(sys.argv[1]), float(sys.argv[2])\n"
    "while True:\n"
    "    t = time.perf_counter()\n"
    "    while time.perf_counter() - t < busy:\n"
    "        pass\n"
    "    time.sleep(rest)\n"
)
PRIORITY = {"": [], "nice": ["nice", "-n", "19"], "idle": ["chrt", "-i", "0"]}


def ledger_pid(root: int) -> int:
    kids, todo = bench.children_map(), [root]
    while todo:
        pid = todo.pop()
        if b"\0ledger\0run\0" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
        todo += kids.get(pid, [])
    raise SystemExit("no ledger process under tokenmeter serve")


def percentiles(target: bench.Target, stream: bool, duration: float) -> tuple[float, float]:
    argv = [sys.executable, str(bench.BENCH / "loadgen.py"), "--url", target.url]
    argv += ["--key", target.key, "-c", "1", "-d", str(duration), "-w", "1"]
    argv += ["--cpu", str(bench.CHAIN[0])] if bench.CHAIN else []
    done = subprocess.run(
        [*argv, *(["--stream"] if stream else [])],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    block = json.loads(done.stdout)["ttfc_ms" if stream else "latency_ms"]
    return block["p50"], block["p99"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("conditions", nargs="*", default=["normal", "stopped"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0, help="window per run, s")
    parser.add_argument(
        "--placement",
        choices=["chain", "free"],
        default="chain",
        help="as bench/run.py's: the load generator, the mock and the worker on the first CPU, "
        "the ledger on the last (default); free: the kernel places them",
    )
    args = parser.parse_args()
    bench.CHAIN = bench.chain_cpus() if args.placement == "chain" else None
    out, work = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    try:
        direct = bench.start_mock(out)
        if bench.CHAIN:
            bench.set_cpus(bench.MOCK[0].pid, {bench.CHAIN[0]})
        print(f"placement: {bench.placement()}")
        server = bench.start_tokenmeter(1, work, direct.url.removesuffix("/v1"), out)
        assert server.proc is not None
        ledger = ledger_pid(server.proc.pid)
        print("condition               mode     +p50 ms  +p99 ms  p99/p50")
        for _ in range(args.rounds):
            for cond in args.conditions:
                burner = None
                if cond != "normal":
                    os.kill(ledger, signal.SIGSTOP)
                if cond.startswith("burn:"):
                    _, busy, rest, *prio = cond.split(":")
                    burner = subprocess.Popen(
                        [
                            *PRIORITY[prio[0] if prio else ""],
                            sys.executable,
                            "-c",
                            BURNER,
                            busy,
                            rest,
                        ]
                    )
                try:
                    for stream in (False, True):
                        d50, d99 = percentiles(direct, stream, args.duration)
                        t50, t99 = percentiles(server, stream, args.duration)
                        a50, a99 = t50 - d50, t99 - d99
                        mode = "stream" if stream else "nonstream"
                        print(f"{cond:<23} {mode:<9} {a50:6.3f}  {a99:7.3f}  {a99 / a50:6.2f}×")
                finally:
                    if burner is not None:
                        burner.kill()
                    if cond != "normal":
                        os.kill(ledger, signal.SIGCONT)
                        time.sleep(2)  # it catches up before the next condition
    finally:
        for proc in bench.STARTED:
            bench.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
