"""Sends the demo's planned requests through the gateway's public HTTP API, a bounded number at a
time, each stamped with its simulated start (X-Tokenmeter-Simulated-Time).

Prompts are filler words shaped by the simulated backends' directives (``[[fake:words=N]]`` for
the output, ``[[fake:cache_read=N]]`` / ``[[fake:cached=N]]`` for prompt-cache hits), so the
usage each request records follows from the plan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from proxy.demo.org import PlannedRequest

_FILLER = "lorem " * 4_000


@dataclass(slots=True)
class DriveResult:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0


def http_request(r: PlannedRequest) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Path, JSON body and headers of one planned request."""
    uc = r.use_case
    headers = {
        "X-Meter-User": r.user,
        "X-Meter-Agent": uc.agent,
        "X-Meter-Session": r.session,
        "X-Meter-Use-Case": uc.name,
        "X-Tokenmeter-Simulated-Time": f"{r.at:.6f}",
    }
    words = _FILLER[: 6 * r.prompt_words]
    if uc.api == "embeddings":
        return "/v1/embeddings", {"model": uc.model, "input": words}, headers
    directives = f" [[fake:words={r.output_words}]]"
    if uc.api == "anthropic":
        directives += f" [[fake:cache_read={r.cache_read}]]" if r.cache_read else ""
        body = {
            "model": uc.model,
            "max_tokens": 4096,
            "stream": r.stream,
            "messages": [{"role": "user", "content": words + directives}],
        }
        return "/v1/messages", body, {**headers, "anthropic-version": "2023-06-01"}
    directives += f" [[fake:cached={r.cached}]]" if r.cached else ""
    body = {
        "model": uc.model,
        "stream": r.stream,
        "messages": [{"role": "user", "content": words + directives}],
    }
    return "/v1/chat/completions", body, headers


async def drive(
    base_url: str,
    plan: list[PlannedRequest],
    *,
    concurrency: int,
    on_done: Callable[[PlannedRequest], None] = lambda _: None,
) -> DriveResult:
    """Send every request of ``plan`` in order, at most ``concurrency`` in flight."""
    result = DriveResult()
    slots = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as http:

        async def send(r: PlannedRequest) -> None:
            path, body, headers = http_request(r)
            try:
                async with http.post(path, json=body, headers=headers) as resp:
                    await resp.read()  # a stream is read to its end, as a client would
                    result.failed += resp.status >= 400
            except (aiohttp.ClientError, TimeoutError):
                result.failed += 1
            finally:
                result.sent += 1
                slots.release()
                on_done(r)

        tasks: set[asyncio.Task[None]] = set()
        for r in plan:
            await slots.acquire()
            task = asyncio.create_task(send(r))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - started
    return result
