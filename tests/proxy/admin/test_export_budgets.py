"""Budget vs actual in the export, through the admin API and the command line: the current
month's team_budgets view shows what GET /admin/budgets shows, for budgets from the config file
and from the API alike."""

from __future__ import annotations

import csv
import io
import random
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import openpyxl
import pyarrow.parquet as pq
import pytest
import yaml

from metering.events import UsageEvent
from metering.export.month import Month
from metering.writer import insert_events
from tests.metering.factories import make_event
from tests.support import Gateway

TEAMS = {"key_p": "platform", "key_r": "research", "key_x": "sales"}


def this_months_events(n: int, month: Month, now: datetime) -> list[UsageEvent]:
    rng = random.Random(5)
    start, end = month.start.timestamp(), now.timestamp() - 1
    events = []
    for _ in range(n):
        key_id = rng.choice(sorted(TEAMS))
        events.append(
            make_event(rng, key_id=key_id, team=TEAMS[key_id], started_at=rng.uniform(start, end))
        )
    return events


def spent(events: list[UsageEvent], team: str) -> tuple[int, int]:
    mine = [e for e in events if e.team == team]
    return sum(e.cost_micro_usd or 0 for e in mine), sum(e.usage.total_tokens for e in mine)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[tuple[Gateway, Month, dict[str, Any]]]:
    now = datetime.now(UTC)
    month = Month(now.year, now.month)
    events = this_months_events(200, month, now)
    platform_cost, _ = spent(events, "platform")
    research_cost, research_tokens = spent(events, "research")
    budgets = {
        "refresh_interval_s": 0.1,
        "limits": [  # platform past its soft threshold (91 %), a weekly one only named
            {
                "scope": "team",
                "subject": "platform",
                "limit_usd": str(Decimal(platform_cost * 11 // 10).scaleb(-6)),
            },
            {"scope": "team", "subject": "platform", "period": "week", "limit_tokens": 10},
        ],
    }
    gw = Gateway(tmp_path_factory.mktemp("budgets") / "tm.db", {"budgets": budgets}).start()
    insert_events(gw.engine, events)
    r = httpx.post(  # research: ok on USD, over its tokens
        f"{gw.url}/admin/budgets",
        json={
            "scope": "team",
            "subject": "research",
            "limit_usd": research_cost / 1e6 * 2,
            "limit_tokens": research_tokens // 2,
        },
        headers=gw.admin_headers,
    )
    assert r.status_code == 201, r.text
    yield gw, month, budgets
    gw.stop()


def admin_budgets(gw: Gateway) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{gw.url}/admin/budgets?fresh=true", headers=gw.admin_headers, timeout=30)
    assert r.status_code == 200, r.text
    return {b["subject"]: b for b in r.json() if b["period"] == "month"}


def assert_matches_admin_budgets(rows: dict[str, dict[str, Any]], gw: Gateway) -> None:
    budgets = admin_budgets(gw)
    assert {t for t, r in rows.items() if r["budgets"]} == set(budgets) == {"platform", "research"}
    assert {b["status"] for b in budgets.values()} == {"soft", "exceeded"}
    for team, b in budgets.items():
        row = rows[team]
        assert row["budgets"] == b["id"]
        assert row["status"] == b["status"]
        assert int(row["cost_micro_usd"]) == b["spent_micro_usd"], team
        assert int(row["total_tokens"]) == b["spent_tokens"], team
        assert int(row["budget_micro_usd"]) == b["limit_micro_usd"], team
        used = [float(row[c]) for c in ("cost_used_share", "token_used_share") if row[c] != ""]
        assert max(used) == pytest.approx(b["used_ratio"]), team
        if b["limit_tokens"] is None:
            assert row["budget_tokens"] == ""
        else:
            assert int(row["budget_tokens"]) == b["limit_tokens"]
    assert rows["sales"]["budgets"] == rows["sales"]["budget_usd"] == ""  # no budget: blank
    assert rows["platform"]["other_budgets"] == "team:platform:week 10 tokens"


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def test_the_api_export_shows_what_admin_budgets_shows(setup):
    gw, month, _ = setup
    r = httpx.get(f"{gw.url}/admin/exports/{month}.parquet", headers=gw.admin_headers, timeout=60)
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        table = pq.read_table(io.BytesIO(zf.read("team_budgets.parquet"))).to_pylist()
    rows = {r["team"]: {k: as_text(v) for k, v in r.items()} for r in table}
    assert_matches_admin_budgets(rows, gw)


def test_the_api_workbook_has_the_team_budgets_sheet(setup):
    gw, month, _ = setup
    r = httpx.get(f"{gw.url}/admin/exports/{month}.xlsx", headers=gw.admin_headers, timeout=60)
    assert r.status_code == 200, r.text
    ws = openpyxl.load_workbook(io.BytesIO(r.content))["team_budgets"]
    header, *body, total = ws.iter_rows(values_only=True)
    rows = {r[0]: dict(zip(header, map(as_text, r), strict=True)) for r in body}
    assert_matches_admin_budgets(rows, gw)
    assert total[0] == "total" and ws[ws.max_row][0].font.b
    at = header.index("cost_micro_usd")
    assert total[at] == sum(r[at] for r in body)
    status = header.index("status") + 1
    fills = {ws.cell(i, status).value: ws.cell(i, status).fill.fgColor.rgb for i in (2, 3, 4)}
    assert fills["exceeded"] != fills["soft"] and fills["exceeded"].endswith("F4CCCC")


def test_the_cli_export_reads_the_configs_and_the_ledgers_budgets(setup, tmp_path):
    gw, month, budgets = setup
    config = tmp_path / "tm.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": gw.db_url}, "budgets": budgets}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "export",
            "--config",
            str(config),
            "--month",
            str(month),
            "--format",
            "csv",
            "--out",
            "out",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "out" / "team_budgets.csv").open(newline="") as fh:
        rows = {r["team"]: r for r in csv.DictReader(fh)}
    assert_matches_admin_budgets(rows, gw)
