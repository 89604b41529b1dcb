"""The export through the admin API and the command line: the files, and clear refusals for an
unknown or empty month."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openpyxl
import pytest
import yaml

from metering.writer import insert_events
from tests.metering.export.month_data import MONTH, month_events
from tests.support import Gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("export") / "tm.db", {}).start()
    insert_events(gw.engine, month_events(300))
    yield gw
    gw.stop()


def get(gw: Gateway, name: str, **kwargs) -> httpx.Response:
    headers = kwargs.pop("headers", gw.admin_headers)
    return httpx.get(f"{gw.url}/admin/exports/{name}", headers=headers, timeout=60, **kwargs)


def test_api_serves_the_workbook(gateway):
    r = get(gateway, "2026-10.xlsx")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert 'filename="tokenmeter-2026-10.xlsx"' in r.headers["content-disposition"]
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    header, first = wb["summary"].iter_rows(min_row=1, max_row=2, values_only=True)
    summary = dict(zip(header, first, strict=True))
    assert summary["requests"] == 302  # 300 inside the month, 2 of the 4 edge events


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_api_serves_zips(gateway, fmt):
    r = get(gateway, f"2026-10.{fmt}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.content[:2] == b"PK"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("2026-05.csv", "no requests in 2026-05"),
        ("2026-13.csv", "not a month"),
        ("2026-10.pdf", "csv,xlsx,parquet"),
        ("2999-01.xlsx", "has not started yet"),
    ],
)
def test_api_refuses_unknown_and_empty_months_with_404(gateway, name, message):
    r = get(gateway, name)
    assert r.status_code == 404
    assert message in r.json()["error"]["message"]


def test_api_needs_the_admin_key(gateway):
    assert get(gateway, "2026-10.csv", headers={}).status_code == 401


def run_cli(gateway: Gateway, tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "tm.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": gateway.db_url}}))
    return subprocess.run(
        [sys.executable, "-m", "proxy", "export", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_cli_writes_the_file_and_prints_the_headline(gateway, tmp_path):
    proc = run_cli(gateway, tmp_path, "--month", str(MONTH), "--format", "parquet")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tokenmeter-2026-10.parquet.zip").stat().st_size > 0
    assert "302 requests" in proc.stdout and "of use cases" in proc.stdout


def test_cli_empty_month_fails_with_a_message(gateway, tmp_path):
    proc = run_cli(gateway, tmp_path, "--month", "2026-05", "--out", "x.xlsx")
    assert proc.returncode == 1
    assert "no requests in 2026-05: the ledger has requests from 2026-09 to 2026-11" in proc.stderr
    assert not (tmp_path / "x.xlsx").exists()


def test_cli_unknown_month_is_a_usage_error(gateway, tmp_path):
    proc = run_cli(gateway, tmp_path, "--month", "2026-13")
    assert proc.returncode == 2 and "not a month: '2026-13'" in proc.stderr
