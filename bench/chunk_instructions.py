"""Instructions per relayed chunk of an open stream, counted by callgrind: the cost that decides
how many open streams one worker holds (bench/open_streams.py), comparable on a shared machine.

    python bench/chunk_instructions.py [--streams 50] [--seconds 8] [--src DIR]

bench/open_streams.py's slow upstream (one chunk per stream every 100 ms, phases spread) behind
`python -m proxy serve --workers 1` (the bench config) under `valgrind --tool=callgrind
--instr-atstart=no`. Once every stream is streaming, instrumentation goes on for --seconds, and
the worker's instructions (every thread) are divided by the chunks the upstream wrote meanwhile:
one read and one write each. --src serves from another source tree, for a before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import tempfile
from pathlib import Path

import open_streams
import uvloop
from instructions import dumped_instructions, start_under_callgrind, wait_healthy
from run import REPO, stop


async def count_chunks(
    args: argparse.Namespace, sock: socket.socket, port: int, key: str, pid: int
) -> int:
    """Open the streams, wait until they all stream, then count the chunks the upstream wrote
    while the worker's instrumentation was on."""
    loop = asyncio.get_running_loop()
    chunks_each = round((args.seconds + 60) / open_streams.INTERVAL_S)  # outlive the window
    upstream = await loop.create_server(lambda: open_streams.SlowUpstream(chunks_each), sock=sock)
    tick = asyncio.create_task(open_streams.ticker(open_streams.INTERVAL_S, synchronized=False))
    try:
        request = open_streams.request_bytes(port, key)
        clients = [
            await open_streams.open_stream(port, request, probe=False) for _ in range(args.streams)
        ]
        await asyncio.wait_for(asyncio.gather(*(c.streaming.wait() for c in clients)), 120)
        await asyncio.sleep(2)  # past the opening
        streams = list(open_streams.SlowUpstream.open)
        control = ["callgrind_control", "-i", "on", str(pid)]
        await asyncio.to_thread(subprocess.run, control, check=True)
        sent = sum(s.sent for s in streams)
        await asyncio.sleep(args.seconds)
        chunks = sum(s.sent for s in streams) - sent
        await asyncio.to_thread(subprocess.run, ["callgrind_control", "-d", str(pid)], check=True)
        return chunks
    finally:
        tick.cancel()
        upstream.close()


def measure(args: argparse.Namespace, work: Path) -> dict[str, float]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    upstream = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server, port, key = start_under_callgrind(work, upstream, args.src)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/v1", server, 300)
        chunks = uvloop.run(count_chunks(args, sock, port, key, server.pid))
        total = dumped_instructions(work, server.pid)
    finally:
        stop(server)
    return {"chunks": chunks, "instructions": total, "per_chunk": round(total / chunks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0, help="instrumented window")
    parser.add_argument("--src", help="source tree to serve from (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tm-cg-chunks-") as tmp:
        result = measure(args, Path(tmp))
    print(json.dumps({"streams": args.streams, "src": args.src or str(REPO), **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
