"""Which CPUs the serving workers and the ledger process run on (``serve --cpus``,
``--ledger-cpus``; ``ledger run --cpus``), written as ``taskset -c`` writes them: ``1``, ``0-3,6``.

The ledger process exists so that its database work stays off the serving path; on a host of few
cores it still shares their CPUs unless it is placed apart. On a 2-vCPU machine the serving path's
c=1 tail was 3-6.6x its median with every process free to run anywhere, 1.25-2.2x with the
serving chain on one CPU and the ledger on the other (docs/performance.md). Linux only
(``sched_setaffinity``); nothing is pinned unless asked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from proxy.cli.common import fail


def parse_cpus(spec: str) -> frozenset[int]:
    """``0-3,6`` as its CPU numbers; ValueError saying what is wrong."""
    cpus: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        if not (first.isdigit() and (not dash or last.isdigit())):
            raise ValueError(f"{part!r} is not a CPU number or range (write 1, or 0-3,6)")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"the range {part!r} runs backwards")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def format_cpus(cpus: Iterable[int]) -> str:
    """The CPU numbers as ranges: ``0-3,6``."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def usable_cpus(option: str, spec: str | None) -> frozenset[int] | None:
    """The CPUs an option names, checked against those this process may use; a bad value
    ends the command with one line and exit code 2."""
    if spec is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        fail(f"{option} needs Linux (sched_setaffinity); leave it unset here", code=2)
    try:
        cpus = parse_cpus(spec)
    except ValueError as exc:
        fail(f"{option} {spec!r}: {exc}", code=2)
    allowed = os.sched_getaffinity(0)
    if not cpus <= allowed:
        fail(
            f"{option} {spec!r}: CPU {format_cpus(cpus - allowed)} is not one this process may "
            f"use ({format_cpus(allowed)})",
            code=2,
        )
    return cpus


def pin(cpus: frozenset[int] | None) -> None:
    """Run this thread, and the threads and processes it starts from now on, on ``cpus``."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
