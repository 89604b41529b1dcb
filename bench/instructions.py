"""Instructions per request of one tokenmeter worker, counted by callgrind: the figure that
stays comparable on a shared machine (docs/performance.md, "The hot path ... in instructions").

    python bench/instructions.py [--mode nonstream|stream] [--api openai|responses|anthropic]
                                 [--model mock-gpt] [--requests 200] [--warmup 200] [-c 4]
                                 [--src DIR]

Starts bench/mock_upstream.py and `python -m proxy serve --workers 1` (the bench config:
SQLite ledger, journal and request log on) under `valgrind --tool=callgrind
--instr-atstart=no`. After --warmup requests, instrumentation goes on for exactly --requests
requests from -c keep-alive clients, the counts are dumped and the summary (every thread of the
worker) divided by --requests is printed. --api picks the client protocol (Chat Completions,
/v1/responses or Anthropic Messages) and --model the upstream (mock-gpt: the vLLM-shaped
deployment, mock-claude: the Anthropic one), so a translation compares with a pass-through.
--src serves from another source tree with this interpreter, for a before and after:
`git archive main | tar -x -C DIR`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from loadgen import api_request
from run import (
    BENCH,
    REPO,
    clean_env,
    executable,
    free_port,
    spawn,
    stop,
    tokenmeter_config,
)


def send(
    base: str,
    key: str,
    *,
    stream: bool,
    count: int,
    clients: int,
    api: str = "openai",
    model: str = "mock-gpt",
) -> None:
    """Exactly ``count`` requests of ``api`` (bench/loadgen.py's) over ``clients`` keep-alive
    connections."""
    path, body, marker = api_request(api, model, stream)
    headers = {"authorization": f"Bearer {key}", "x-api-key": key}
    failures: list[str] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            for _ in range(n):
                with http.stream("POST", path, json=body) as resp:
                    data = resp.read()
                    if resp.status_code != 200 or marker not in data:
                        failures.append(f"{resp.status_code} {data[:200]!r}")

    shares = [count // clients + (i < count % clients) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, first: {failures[0]}")


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            if httpx.get(base.removesuffix("/v1") + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not start in time")


def start_under_callgrind(
    work: Path, upstream: str, src: str | None
) -> tuple[subprocess.Popen[bytes], int, str]:
    """`python -m proxy serve --workers 1` (the bench config, its own key) on ``upstream`` under
    callgrind with instrumentation off, from ``src`` (default: this tree); returns the server,
    its port on 127.0.0.1 and the key."""
    config = tokenmeter_config(work, "tokenmeter-cg", upstream)
    create = [executable("tokenmeter") or "tokenmeter", "keys", "create", "--user", "bench"]
    key = subprocess.run(
        [*create, "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    ).stdout.strip()
    port = free_port()
    tree = Path(src).resolve() if src else REPO
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    argv += [f"--callgrind-out-file={work}/cg.out.%p", sys.executable, "-m", "proxy"]
    argv += ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1", "--log-level", "info"]
    with (work / "server.log").open("ab") as log:  # from src: `-m` imports the cwd's tree
        server = subprocess.Popen(
            argv,
            cwd=tree,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(PYTHONPATH=str(tree)),
            start_new_session=True,
        )
    return server, port, key


def dumped_instructions(work: Path, pid: int) -> int:
    """The instructions in callgrind's first dump of ``pid`` (every thread)."""
    dump = (work / f"cg.out.{pid}.1").read_text()
    return int(next(line for line in dump.splitlines() if line.startswith("summary:")).split()[1])


def measure(args: argparse.Namespace, work: Path) -> dict[str, float]:
    mock_port = free_port()
    mock_argv = [sys.executable, str(BENCH / "mock_upstream.py"), "--port", str(mock_port)]
    mock = spawn(mock_argv, work / "mock.log")
    try:
        server, port, key = start_under_callgrind(work, f"http://127.0.0.1:{mock_port}", args.src)
        base = f"http://127.0.0.1:{port}/v1"
        try:
            wait_healthy(base, server, timeout_s=300)
            stream = args.mode == "stream"
            shape = {"stream": stream, "clients": args.c, "api": args.api, "model": args.model}
            send(base, key, count=args.warmup, **shape)
            subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True)
            send(base, key, count=args.requests, **shape)
            subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True)
            total = dumped_instructions(work, server.pid)
        finally:
            stop(server)
    finally:
        stop(mock)
    return {"instructions": total, "per_request": total / args.requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("nonstream", "stream"), default="nonstream")
    parser.add_argument("--api", choices=("openai", "responses", "anthropic"), default="openai")
    parser.add_argument("--model", choices=("mock-gpt", "mock-claude"), default="mock-gpt")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("-c", type=int, default=4)
    parser.add_argument("--src", help="source tree to serve from (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tm-cg-") as tmp:
        result = measure(args, Path(tmp))
    shape = {"mode": args.mode, "api": args.api, "model": args.model}
    print(json.dumps({**shape, "src": args.src or str(REPO), **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
