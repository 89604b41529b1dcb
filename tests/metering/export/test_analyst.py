"""The CSV and Parquet directories as an analyst opens them: every file straight into pandas and
DuckDB, no unzipping, money as numbers to compute with, equal to the exact micro-dollars."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from metering.budgets import create_budget
from metering.export.files import write_export_dir
from metering.export.month import MonthExport, build_month_export
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests.metering.export.month_data import MONTH, month_events, tco_inputs


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> MonthExport:
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('a') / 'ledger.db'}")
    upgrade_schema(engine)
    insert_events(engine, month_events(400))
    create_budget(engine, scope="team", subject="platform", limit_micro_usd=5_000_000)
    result = build_month_export(engine, MONTH, tco=tco_inputs())
    engine.dispose()
    return result


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_every_file_loads_in_pandas_and_duckdb_and_its_money_computes(export, fmt, tmp_path):
    files = write_export_dir(export, fmt, tmp_path / fmt)
    data = [p for p in files if p.suffix == f".{fmt}"]
    assert sorted(p.stem for p in data) == sorted(v.name for v in export.views)
    assert (tmp_path / fmt / "README.txt").read_text().startswith("tokenmeter export of 2026-10")
    for path in data:
        view = export.view(path.stem)
        df = read(path)
        assert list(df.columns) == [c.name for c in view.columns], path.name
        assert len(df) == len(view.rows), path.name
        rows = duckdb.connect().execute(f"select count(*) from '{path}'").fetchone()
        assert rows == (len(view.rows),), path.name
        for c in view.columns:
            if c.kind != "usd" or df.empty:
                continue
            assert df[c.name].dtype == "float64", (path.name, c.name)
            with_tax = df[c.name] * 1.2  # arithmetic works: no Decimal objects
            assert with_tax.sum() == pytest.approx(1.2 * df[c.name].sum())
            twin = c.name.removesuffix("_usd") + "_micro_usd"
            if twin not in df.columns:
                continue
            exact = df[twin].dropna()
            if len(exact) == len(df):
                assert df[twin].dtype == "int64"
            else:  # empty cells (a team without a budget): pandas' missing integers are NaN
                assert df[twin].dtype == "float64" and (exact == exact.round()).all()
                kind = duckdb.connect().execute(f"select typeof({twin}) from '{path}'").fetchone()
                assert kind == ("BIGINT",), (path.name, twin)
            # each cent amount is within a cent of its exact micro-dollars
            assert ((df[c.name] - df[twin] / 1e6).dropna().abs() < 0.01 + 1e-9).all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_duckdb_sums_the_line_items_to_the_months_total(export, fmt, tmp_path):
    write_export_dir(export, fmt, tmp_path)
    path = tmp_path / f"line_items.{fmt}"
    db = duckdb.connect()
    micro, usd = db.execute(
        f"select sum(cost_micro_usd), round(sum(cost_usd), 2) from '{path}'"
    ).fetchone()
    [total] = (r for r in export.view("summary").records() if r["scope"] == "all")
    assert micro == total["cost_micro_usd"]
    assert Decimal(str(usd)) == total["cost_usd"]
    by_day = db.execute(
        f"select cast(day as varchar), sum(total_tokens) from '{path}' group by day"
    ).fetchall()
    days = {str(r["day"]): r["total_tokens"] for r in export.view("days").records()}
    assert dict(by_day) == {d: t for d, t in days.items() if d in dict(by_day)}
    assert sum(t for _, t in by_day) == sum(days.values())


def test_rewriting_a_directory_replaces_its_files(export, tmp_path):
    first = write_export_dir(export, "csv", tmp_path)
    second = write_export_dir(export, "csv", tmp_path)
    assert first == second
    assert not list(tmp_path.glob("*.partial"))
