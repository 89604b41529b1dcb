"""The export through the admin API and the command line: the files, and clear refusals for an
unknown or empty month."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
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


@pytest.mark.parametrize("fmt", ["csv", "parquet", "csv.zip", "parquet.zip"])
def test_api_serves_zips(gateway, fmt):
    r = get(gateway, f"2026-10.{fmt}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    plain = fmt.removesuffix(".zip")
    assert f'filename="tokenmeter-2026-10.{plain}.zip"' in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert f"line_items.{plain}" in zf.namelist()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("2026-05.csv", "no requests in 2026-05"),
        ("2026-13.csv", "not a month"),
        ("2026-10.pdf", "xlsx,csv,parquet,csv.zip,parquet.zip"),
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
    proc = run_cli(gateway, tmp_path, "--month", str(MONTH), "--format", "parquet.zip")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tokenmeter-2026-10.parquet.zip").stat().st_size > 0
    assert "302 requests" in proc.stdout and "of use cases" in proc.stdout
    assert f"read {gateway.db_url}" in proc.stdout


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_cli_writes_a_directory_of_plain_files(gateway, tmp_path, fmt):
    proc = run_cli(gateway, tmp_path, "--month", str(MONTH), "--format", fmt, "--out", "oct")
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in (tmp_path / "oct").iterdir()}
    assert {"README.txt", f"summary.{fmt}", f"line_items.{fmt}", f"days.{fmt}"} <= names
    default = run_cli(gateway, tmp_path, "--month", str(MONTH), "--format", fmt)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / f"tokenmeter-2026-10-{fmt}" / f"summary.{fmt}").is_file()


def test_cli_refuses_a_ledger_that_does_not_exist_and_creates_none(tmp_path):
    config = tmp_path / "tm.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": "sqlite:///./nowhere.db"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "export", "--config", str(config), "--month", "2026-10"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert f"no ledger at sqlite:///{(tmp_path / 'nowhere.db').resolve()}" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tm.yaml"]


def test_cli_empty_month_fails_with_a_message(gateway, tmp_path):
    proc = run_cli(gateway, tmp_path, "--month", "2026-05", "--out", "x.xlsx")
    assert proc.returncode == 1
    assert "no requests in 2026-05: the ledger has requests from 2026-09 to 2026-11" in proc.stderr
    assert f"(ledger {gateway.db_url})" in proc.stderr
    assert not (tmp_path / "x.xlsx").exists()


def test_cli_unknown_month_is_a_usage_error(gateway, tmp_path):
    proc = run_cli(gateway, tmp_path, "--month", "2026-13")
    assert proc.returncode == 2 and "not a month: '2026-13'" in proc.stderr
