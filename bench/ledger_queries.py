"""What the admin API reads, timed on an existing ledger: /admin/usage's summaries and the live
TCO projection (its window read from the rollups, then projected).

    python bench/ledger_queries.py --url postgresql://postgres@127.0.0.1/bench_ingest [--serve]

Made for the database bench/ledger_ingest.py --keep leaves (a month of events). Each query runs
once to warm the caches, then --repeat times; prints the median and the slowest, in ms.

--serve also starts `tokenmeter serve` on that ledger (one worker and its ledger process, which
projects the window every ``tco.interval_s``) and times the same answers as a client gets them
over HTTP: /admin/usage, and /admin/tco (the latest projection) and /admin/tco?fresh=true
(projected now from the window the ledger process last read).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metering.live_tco import project_live  # noqa: E402
from metering.queries import usage_summary  # noqa: E402
from metering.store import create_db_engine  # noqa: E402
from metering.tco_window import read_window  # noqa: E402
from tests.metering.export.month_data import tco_inputs  # noqa: E402


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(runs), 1), "max_ms": round(max(runs), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--window-days", type=float, default=30.0)
    ap.add_argument("--serve", action="store_true", help="also over HTTP from tokenmeter serve")
    args = ap.parse_args()
    engine = create_db_engine(args.url)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    month_ago = now - timedelta(days=30)
    inputs = tco_inputs()
    cases: dict[str, Callable[[], Any]] = {
        "usage: totals, all time": lambda: usage_summary(engine, group_by=[]),
        "usage: by user, all time": lambda: usage_summary(engine, group_by=["user"]),
        "usage: by use_case and model, last 30 days": lambda: usage_summary(
            engine, group_by=["use_case", "model"], since=month_ago, until=now
        ),
        "usage: by user, last 24 hours": lambda: usage_summary(
            engine, group_by=["user"], since=now - timedelta(days=1), until=now
        ),
        "live projection: window read": lambda: read_window(
            engine, now=datetime.now(UTC), window_days=args.window_days
        ),
        "live projection: read and project": lambda: project_live(
            engine, inputs, window_days=args.window_days, now=datetime.now(UTC)
        ),
    }
    for name, fn in cases.items():
        print(json.dumps({"query": name, **timed(fn, args.repeat)}), flush=True)
    if args.serve:
        served(args.url, args.repeat)


ADMIN_KEY = "bench-admin-key"
SERVED = {
    "GET /admin/usage (totals)": "/admin/usage",
    "GET /admin/usage?group_by=user": "/admin/usage?group_by=user",
    "GET /admin/usage?group_by=use_case,model": "/admin/usage?group_by=use_case,model",
    "GET /admin/tco": "/admin/tco",
    "GET /admin/tco?fresh=true": "/admin/tco?fresh=true",
}


def served(url: str, repeat: int) -> None:
    """The answers over HTTP from a gateway serving this ledger."""
    import http.client
    import tempfile

    sys.path.insert(0, str(ROOT / "bench"))
    import run as harness

    work = Path(tempfile.mkdtemp(prefix="tokenmeter-ledger-queries-"))
    config = work / "tokenmeter.yaml"
    config.write_text(
        f"auth:\n  admin_key: {ADMIN_KEY}\nstorage:\n  url: {url}\n  journal: true\n"
        f"  journal_dir: {work / 'journal'}\ntco:\n  interval_s: 5\n"
    )
    port = harness.free_port()
    tokenmeter = harness.executable("tokenmeter") or "tokenmeter"
    argv = [tokenmeter, "serve", "--config", str(config), "--host", "127.0.0.1"]
    harness.STARTED.append(harness.spawn([*argv, "--port", str(port)], work / "serve.log"))

    def get(path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", path, headers={"authorization": f"Bearer {ADMIN_KEY}"})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {body[:300]!r}")
        return cast(dict[str, Any], json.loads(body))

    try:
        for _ in range(600):  # the ledger process's first window (tco.interval_s) to be read
            try:
                if get("/admin/tco?fresh=true").get("status") not in (None, "no_traffic"):
                    break
            except (OSError, RuntimeError):
                pass
            time.sleep(0.1)
        for name, path in SERVED.items():
            print(json.dumps({"query": name, **timed(lambda p=path: get(p), repeat)}), flush=True)
    finally:
        for proc in reversed(harness.STARTED):
            harness.stop(proc)


if __name__ == "__main__":
    main()
