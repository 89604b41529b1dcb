"""The real Codex CLI (``codex exec``, headless) against ``tokenmeter serve`` with keys required:
a custom model provider on the Responses wire API, once on an on-prem Mistral alias (vLLM) and
once on a Claude alias; each turn's ledger row equals what the fake reported."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text

from metering.store import create_db_engine
from proxy.simulated import FakeServer
from tests.clients.npm import CODEX, installed_cli
from tests.conftest import backend_models
from tests.proxy.gateway.fake_usage import ledger_usage, reported_usage, requests_for
from tests.support import ADMIN_KEY, serving, wait_for

ALIASES = {"mistral-onprem": ("vllm", 0), "claude": ("anthropic", 3)}


@pytest.fixture(scope="module")
def served(
    fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """(gateway URL, virtual key, database URL) of a ``tokenmeter serve`` on the fakes."""
    root = tmp_path_factory.mktemp("codex-serve")
    models = backend_models(fakes)
    config: dict[str, Any] = {
        "storage": {
            "url": f"sqlite:///{root / 'tm.db'}",
            "journal_dir": str(root / "journal"),
            "flush_interval_s": 0.05,
        },
        "auth": {"admin_key": ADMIN_KEY, "required": True},
        "models": [
            {"name": alias, "deployments": models[index]["deployments"]}
            for alias, (_, index) in ALIASES.items()
        ],
    }
    path = root / "tokenmeter.yaml"
    path.write_text(yaml.safe_dump(config))
    with serving(path, log=root / "serve.log") as url:
        r = httpx.post(
            url + "/admin/keys",
            json={"user": "dev", "team": "tools"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        r.raise_for_status()
        yield url, str(r.json()["key"]), config["storage"]["url"]


def codex_home(tmp_path: Path, url: str, model: str) -> Path:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "tokenmeter"\n'
        "[model_providers.tokenmeter]\n"
        'name = "tokenmeter"\n'
        f'base_url = "{url}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "TOKENMETER_KEY"\n'
    )
    return home


def ledger(db_url: str, session: str) -> list[dict[str, Any]]:
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM usage_events WHERE session = :s ORDER BY id"), {"s": session}
            )
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


@pytest.mark.parametrize("alias", ALIASES)
def test_codex_exec_runs_a_tool_turn_and_every_request_is_metered(served, fakes, tmp_path, alias):
    url, key, db_url = served
    codex = installed_cli(*CODEX)
    marker = f"task-{uuid.uuid4().hex[:10]}"
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env |= {"CODEX_HOME": str(codex_home(tmp_path, url, alias)), "TOKENMETER_KEY": key}
    done = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", "-C", str(workdir), f"list files {marker}"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    backend = ALIASES[alias][0]
    assert f"Simulated reply from the {backend} backend" in done.stdout + done.stderr
    sent = requests_for(fakes[backend], marker)
    # The fake calls Codex's first tool; Codex runs it and sends the output back for the answer.
    assert len(sent) >= 2
    # Codex prints its session id and sends it as the session-id header: that is the session.
    found = re.search(r"session id: ([0-9a-f-]{36})", done.stdout + done.stderr)
    assert found, done.stderr[-2000:]
    session = found.group(1)
    rows = wait_for(lambda: (r := ledger(db_url, session)) and len(r) == len(sent) and r)
    assert [ledger_usage(r) for r in rows] == [reported_usage(fakes[backend], s) for s in sent]
    assert {(r["model"], r["user"], r["status"], r["stream"]) for r in rows} == {
        (alias, "dev", "ok", True)
    }
