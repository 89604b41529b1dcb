"""/metrics through real servers: one process, and several uvicorn workers."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import backend_models
from tests.support import ADMIN_KEY, serving, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}  # serving() sets it: real (fake) backends


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == val for k, val in labels.items())
    )


def test_metrics_match_the_ledger(gateway, api_key):
    for i in range(5):
        httpx.post(
            gateway.url + "/v1/chat/completions",
            json={
                "model": "claude",
                "messages": [{"role": "user", "content": "count me " * (i + 1)}],
            },
            headers={"Authorization": f"Bearer {api_key}", "X-Meter-Use-Case": "metrics-test"},
        ).raise_for_status()
    events = gateway.wait_events(5, "use_case = 'metrics-test'")
    samples = scrape(gateway.url)
    assert total(samples, "tokenmeter_requests_total", use_case="metrics-test") == 5
    assert total(
        samples, "tokenmeter_tokens_total", use_case="metrics-test", token_type="output"
    ) == sum(e["output_tokens"] for e in events)
    assert total(samples, "tokenmeter_cost_usd_total", use_case="metrics-test") == pytest.approx(
        sum(e["cost_micro_usd"] for e in events) / 1e6
    )
    assert total(samples, "tokenmeter_overhead_seconds_count", model="claude") >= 5


@pytest.fixture
def two_workers(fakes, tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "tm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": backend_models(fakes),
                "auth": {"required": False},
                "storage": {
                    "url": f"sqlite:///{tmp_path / 'tm.db'}",
                    "flush_interval_s": 0.05,
                    "journal_dir": str(tmp_path / "journal"),
                },
                "tco": {"interval_s": 0.5, "min_requests": 1, "min_window_s": 0},
            }
        )
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    with serving(config, "--workers", "2", log=tmp_path / "serve.log", env=env) as url:
        assert [p.name[:19] for p in tmp.iterdir()] == ["tokenmeter-metrics-"]
        yield url
    assert list(tmp.iterdir()) == []  # serve removes the metrics directory it made


def post(url: str, i: int) -> None:
    httpx.post(
        url + "/v1/chat/completions",
        timeout=30,
        # hosted traffic: the TCO projection moves hosted traffic, so it has something to size
        json={"model": "azure-mistral", "messages": [{"role": "user", "content": f"w{i}"}]},
        headers={"X-Meter-Use-Case": "workers"},
    ).raise_for_status()


def test_two_workers_count_each_request_once(two_workers, tmp_path):
    n = 0

    def writers() -> set[str]:  # worker pids whose journal segment has events
        segments = (tmp_path / "journal").glob("seg-*.jsonl")
        return {p.name.rsplit("-", 1)[1] for p in segments if p.stat().st_size > 0}

    # The kernel decides which worker accepts a connection: send concurrent batches until both
    # workers have served some (bounded: ten batches).
    with ThreadPoolExecutor(max_workers=12) as pool:
        while len(writers()) < 2 and n < 600:
            list(pool.map(lambda i: post(two_workers, i), range(n, n + 60)))
            n += 60
    assert len(writers()) == 2, writers()
    for _ in range(6):  # whichever worker answers the scrape, the totals are the same
        assert total(scrape(two_workers), "tokenmeter_requests_total", use_case="workers") == n
    tco = wait_for(
        lambda: (
            (b := httpx.get(two_workers + "/admin/tco", headers=ADMIN).json())["status"] == "ok"
            and b
        )
    )
    wait_for(lambda: total(scrape(two_workers), "tokenmeter_tco_gpus_needed") > 0)
    gpus = [
        v for (name, _), v in scrape(two_workers).items() if name == "tokenmeter_tco_gpus_needed"
    ]
    [target] = tco["projection"]["targets"]
    assert gpus == [target["sized"]["sizing"]["gpus_needed"]]  # the max, not a sum


def test_serve_warns_at_start_about_missing_and_deprecated_price_keys(two_workers, tmp_path):
    log = (tmp_path / "serve.log").read_text()
    missing = [x for x in log.splitlines() if "some-model" in x and "price map" in x]
    assert len(missing) == 1, missing  # warned once, naming the deployment
    assert "deployment openai_compatible/some-model" in missing[0]
    assert "is not in the price map" in missing[0]
    assert "prices: deployment 'anthropic/claude-sonnet-4-5' prices at 'claude-sonnet-4-5'" in log


def test_two_workers_report_the_journal_backlog_once(two_workers, tmp_path):
    """With several workers the backlog gauges sum over processes: each worker counts its own
    segments (the ledger process those of processes gone), so a backlog is not counted twice."""
    import os
    import signal

    from metering.status import read_status

    journal = tmp_path / "journal"
    status = wait_for(lambda: read_status(journal))
    os.kill(status.pid, signal.SIGSTOP)  # the ledger process holds still: the backlog stays
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: post(two_workers, i), range(40)))
        for _ in range(4):  # whichever worker answers the scrape
            wait_for(lambda: total(scrape(two_workers), "tokenmeter_journal_backlog_events") == 40)
        assert total(scrape(two_workers), "tokenmeter_journal_backlog_bytes") > 0
    finally:
        os.kill(status.pid, signal.SIGCONT)
    wait_for(lambda: total(scrape(two_workers), "tokenmeter_journal_backlog_events") == 0)
    assert total(scrape(two_workers), "tokenmeter_journal_backlog_bytes") == 0
