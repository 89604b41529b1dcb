"""What the ledger process tells the serving processes, through two small files in the journal
directory (written atomically: a temporary file renamed over the old one).

``ledger-status.json``: its heartbeat, whether the database answers, why the writer is stalled,
and its counts; a serving process reads it for ``/readyz`` and its state gauges.
``tco-window.json``: the trailing window of the live TCO projection (the part that reads the
database); a serving process projects it onto the plan itself, which is arithmetic only.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from cost.tco import MonthlyTokens
from cost.usage import TokenUsage
from metering.tco_window import Peaks, RollupRow, Window

STATUS_FILE = "ledger-status.json"
WINDOW_FILE = "tco-window.json"
LOCK_FILE = "ledger.lock"


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    pid: int
    heartbeat: float  # time.time() of the last loop
    started: float
    db_ok: bool = True
    stalled: str | None = None  # the database answers, yet this error stops the writer
    written: int = 0  # events inserted since the ledger process started
    quarantined: int = 0  # events quarantined since it started
    orphan_events: int = 0  # events of segments left by processes gone, not yet in the database
    backlog_bytes: int = 0  # journal bytes of every segment not yet in the database

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_status(directory: Path, status: LedgerStatus) -> None:
    write_atomically(directory / STATUS_FILE, orjson.dumps(asdict(status)))


def read_status(directory: Path) -> LedgerStatus | None:
    """The last status the ledger process wrote; None if there is none (or it is unreadable)."""
    try:
        return LedgerStatus(**orjson.loads((directory / STATUS_FILE).read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


def write_window(directory: Path, window: Window | None) -> None:
    write_atomically(directory / WINDOW_FILE, orjson.dumps(_window_json(window)))


def read_window_file(directory: Path) -> tuple[float, Window | None] | None:
    """(when it was written, the window or None for an empty ledger); None if there is no
    readable file."""
    path = directory / WINDOW_FILE
    try:
        written = path.stat().st_mtime
        return written, _window_of(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        return None


def _window_json(w: Window | None) -> dict[str, Any] | None:
    if w is None:
        return None
    return {
        "start": w.start.isoformat(),
        "end": w.end.isoformat(),
        "requests": w.requests,
        "tokens_by_use_case": {k: asdict(v) for k, v in w.tokens_by_use_case.items()},
        "onprem_input_tokens": w.onprem_input_tokens,
        "onprem_output_tokens": w.onprem_output_tokens,
        "hosted_cost_micro_usd": w.hosted_cost_micro_usd,
        "peaks": asdict(w.peaks),
        "hosted_rows": [{**asdict(r), "usage": asdict(r.usage)} for r in w.hosted_rows],
        "onprem_by_deployment": {k: list(v) for k, v in w.onprem_by_deployment.items()},
    }


def _window_of(d: dict[str, Any] | None) -> Window | None:
    if d is None:
        return None
    return Window(
        start=datetime.fromisoformat(d["start"]),
        end=datetime.fromisoformat(d["end"]),
        requests=d["requests"],
        tokens_by_use_case={k: MonthlyTokens(**v) for k, v in d["tokens_by_use_case"].items()},
        onprem_input_tokens=d["onprem_input_tokens"],
        onprem_output_tokens=d["onprem_output_tokens"],
        hosted_cost_micro_usd=d["hosted_cost_micro_usd"],
        peaks=Peaks(**d["peaks"]),
        hosted_rows=tuple(
            RollupRow(**{**r, "usage": TokenUsage(**r["usage"])}) for r in d["hosted_rows"]
        ),
        onprem_by_deployment={k: (v[0], v[1]) for k, v in d["onprem_by_deployment"].items()},
    )
