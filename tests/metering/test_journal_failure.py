"""An unwritable journal fails requests loudly (503) instead of serving unmetered traffic, and
loses nothing answered under either policy: on a SQLite and on a PostgreSQL ledger."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import openai
import pytest

from metering.store import create_db_engine, upgrade_schema
from tests.conftest import backend_models
from tests.support import Gateway, wait_for


@pytest.fixture
def ledger(db_url: str) -> str:
    engine = create_db_engine(db_url)
    upgrade_schema(engine)  # serve migrates SQLite itself, never PostgreSQL
    engine.dispose()
    return db_url


@pytest.fixture
def gateway(fakes, ledger, tmp_path) -> Iterator[Gateway]:
    config = {"models": backend_models(fakes), "storage": {"url": ledger}}
    gw = Gateway(tmp_path / "tm.db", config).start()
    yield gw
    gw.stop()


def break_journal(gateway: Gateway) -> None:
    """Swap the journal's descriptor for a read-only one: every append now fails with EBADF,
    as it would on an I/O error; a full disk fails the same code path with ENOSPC."""
    journal = gateway.app.state.runtime.ledger._writer._journal
    os.dup2(os.open(os.devnull, os.O_RDONLY), journal.active.fd)


def chat(gateway: Gateway, key: str) -> openai.types.chat.ChatCompletion:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=key, max_retries=0
    ).chat.completions.create(model="vllm-model", messages=[{"role": "user", "content": "hi"}])


def test_unwritable_journal_answers_503_then_recovers(gateway):
    key = gateway.create_key(user="ops")
    chat(gateway, key)
    break_journal(gateway)
    with pytest.raises(openai.APIStatusError) as info:
        chat(gateway, key)  # its tokens were spent: the event is held in memory, not lost
    assert info.value.status_code == 503
    # the writer probes a fresh segment and, the directory being writable, recovers
    wait_for(lambda: httpx.get(gateway.url + "/readyz").json()["journal"] == "ok")
    chat(gateway, key)
    events = gateway.wait_events(3)
    assert [e["status"] for e in events] == ["ok", "ok", "ok"]


def test_serve_policy_keeps_serving(fakes, ledger, tmp_path):
    gw = Gateway(
        tmp_path / "tm.db",
        {
            "models": backend_models(fakes),
            "storage": {"url": ledger, "on_journal_error": "serve"},
        },
    )
    gw.start()
    try:
        key = gw.create_key(user="ops")
        break_journal(gw)
        assert all(chat(gw, key).choices for _ in range(3))
        assert [e["status"] for e in gw.wait_events(3)] == ["ok"] * 3
    finally:
        gw.stop()
