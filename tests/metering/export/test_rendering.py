"""The workbook as it prints: LibreOffice converts it to PDF, and page one is the whole overview
sheet (the next page is the next sheet's) with the month, the 80/20 sentence and the verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from metering.export.month import MonthExport, build_month_export
from metering.export.story import pareto_sentence, verdict
from metering.store import create_db_engine, upgrade_schema
from metering.writer import insert_events
from tests import services
from tests.metering.export.month_data import MONTH, month_events, tco_inputs, write_any

CONVERT_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> MonthExport:
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('r') / 'ledger.db'}")
    upgrade_schema(engine)
    insert_events(engine, month_events(600))
    result = build_month_export(engine, MONTH, tco=tco_inputs())
    engine.dispose()
    return result


def to_pdf(xlsx: Path) -> Path:
    soffice = services.libreoffice(why="the rendering test")
    profile = xlsx.parent / "lo-profile"  # its own profile: parallel runs don't share a lock
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(xlsx.parent),
            str(xlsx),
        ],
        check=True,
        capture_output=True,
        timeout=CONVERT_TIMEOUT_S,
    )
    return xlsx.with_suffix(".pdf")


def page_text(pdf: Path, page: int) -> str:
    out = subprocess.run(
        [
            services.program("pdftotext", package="poppler-utils", why="the rendering test"),
            "-f",
            str(page),
            "-l",
            str(page),
            "-layout",
            str(pdf),
            "-",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return " ".join(out.stdout.split())


def test_page_one_is_the_overview_on_one_page(export, tmp_path):
    pdf = to_pdf(write_any(export, "xlsx", tmp_path))
    first, second = page_text(pdf, 1), page_text(pdf, 2)
    assert "October 2026: LLM spend and where it went" in first
    assert pareto_sentence(export) in first
    assert "Hosted (metered bill)" in first and "On-prem (TCO model)" in first
    assert verdict(export)[:40] in first  # the verdict, which may wrap after that
    # The footer names the sheet: page one is the overview's, page two already the summary's.
    assert "overview page 1 of" in first
    assert "summary page 2 of" in second
