"""The real Claude Code CLI, headless, against ``tokenmeter serve`` with keys required.

Its backends are the simulated fakes behind real sockets, so the test knows every upstream call
and can ask each fake again for its own count. Three runs: a Claude alias (native Messages), an
on-prem Mistral alias on vLLM (Messages translated to Chat Completions, tool calls streamed),
and no ``--model`` (Claude Code's own default id, resolved by a pattern route).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from proxy.gateway.relays.upstream_usage import anthropic_usage, openai_usage
from proxy.simulated import FakeServer
from tests.clients.npm import CLAUDE_CODE, installed_cli
from tests.conftest import FAKE_KEYS
from tests.support import serving, wait_for

ADMIN = "admin-claude-code"
RUN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def claude() -> Path:
    return installed_cli(*CLAUDE_CODE)


@pytest.fixture(scope="module")
def server(
    fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("claude-code")
    db = root / "tokenmeter.db"
    anthropic_dep = {
        "backend": "anthropic",
        "api_base": fakes["anthropic"].url,
        "api_key_env": "TM_TEST_ANTHROPIC_KEY",
    }
    config = {
        "storage": {
            "url": f"sqlite:///{db}",
            "journal_dir": str(root / "journal"),
            "flush_interval_s": 0.02,
        },
        "auth": {"required": True, "admin_key": ADMIN, "refresh_interval_s": 0.05},
        "models": [
            {
                "name": "claude-sonnet",
                "deployments": [{**anthropic_dep, "model": "claude-sonnet-4-5"}],
            },
            {
                "name": "claude-haiku",
                "deployments": [{**anthropic_dep, "model": "claude-haiku-4-5"}],
            },
            {
                "name": "mistral-large",
                "deployments": [
                    {
                        "backend": "vllm",
                        "model": "mistralai/Mistral-Large-Instruct-2411",
                        "api_base": fakes["vllm"].url + "/v1",
                        "api_key_env": "TM_TEST_VLLM_KEY",
                    }
                ],
            },
        ],
        "model_routes": [
            {"pattern": "claude-haiku-*", "model": "claude-haiku"},
            {"pattern": "claude-*", "model": "claude-sonnet"},
        ],
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with serving(path, log=root / "serve.log") as url:
        r = httpx.post(
            url + "/admin/keys",
            json={"user": "cc-dev", "team": "platform"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        r.raise_for_status()
        yield {"url": url, "key": r.json()["key"], "db": f"sqlite:///{db}", "root": str(root)}


def run_claude(claude: Path, server: dict[str, str], home: Path, *model: str) -> dict[str, Any]:
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ANTHROPIC_BASE_URL": server["url"],
        "ANTHROPIC_API_KEY": server["key"],
        "ANTHROPIC_AUTH_TOKEN": server["key"],
    }
    done = subprocess.run(
        [str(claude), "-p", "Say hello in one word.", "--output-format", "json", *model],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    out = json.loads(done.stdout)
    assert out["is_error"] is False and out["result"], out
    return dict(out)


def rows(db_url: str, session: str, n: int) -> list[dict[str, Any]]:
    engine = create_engine(db_url)
    try:

        def found() -> list[dict[str, Any]]:
            with engine.connect() as conn:
                result = conn.execute(
                    text("SELECT * FROM usage_events WHERE session = :s ORDER BY id"),
                    {"s": session},
                )
                return [dict(r._mapping) for r in result]

        got = wait_for(lambda: len(found()) >= n and found(), timeout_s=20)
        assert len(got) == n, got
        return got
    finally:
        engine.dispose()


def fake_counts(fake: FakeServer, path: str, key: str) -> list[tuple[int, int]]:
    """(input, output) tokens the fake reports for each call it got on ``path``, asked again."""
    counts = []
    for sent in [r for r in fake.requests if r.path == path]:
        body = {**(sent.body or {}), "stream": False}
        body.pop("stream_options", None)
        headers = {
            "x-api-key": key,
            "anthropic-version": "2023-06-01",
            "authorization": f"Bearer {key}",
        }
        r = httpx.post(fake.url + path, json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        tokens = anthropic_usage(usage) if "input_tokens" in usage else openai_usage(usage)
        counts.append((tokens.input_tokens, tokens.output_tokens))
    return counts


@pytest.mark.parametrize(
    ("model", "fake", "path", "backend"),
    [
        (["--model", "claude-sonnet"], "anthropic", "/v1/messages", "anthropic"),
        (["--model", "mistral-large"], "vllm", "/v1/chat/completions", "vllm"),
        ([], "anthropic", "/v1/messages", "anthropic"),
    ],
    ids=["claude-alias", "on-prem-mistral", "default-model"],
)
def test_claude_code_headless(claude, server, fakes, tmp_path, model, fake, path, backend):
    for f in fakes.values():
        f.reset()
    out = run_claude(claude, server, tmp_path / "home", *model)
    calls = fake_counts(fakes[fake], path, FAKE_KEYS[fake])
    assert calls, "Claude Code reached no upstream"
    events = rows(server["db"], out["session_id"], len(calls))
    assert all(e["status"] == "ok" and e["backend"] == backend for e in events)
    assert sorted((e["input_tokens"], e["output_tokens"]) for e in events) == sorted(calls)
    assert {(e["user"], e["agent"]) for e in events} == {("cc-dev", "claude-code")}
    if model:
        assert {e["model"] for e in events} == {model[1]}
    else:
        [used] = out["modelUsage"]  # Claude Code's own default id, resolved by claude-*
        assert used.startswith("claude-") and {e["model"] for e in events} == {used}
        assert {e["upstream_model"] for e in events} == {used}
    if fake == "vllm":
        sent = [r for r in fakes["vllm"].requests if r.path == path]
        assert any(r.body and r.body.get("tools") for r in sent)  # its tools, translated
        assert all(
            r.body and r.body["model"] == "mistralai/Mistral-Large-Instruct-2411" for r in sent
        )
    for f in fakes.values():  # nothing of ours reaches an upstream
        for r in f.requests:
            assert server["key"] not in json.dumps(r.headers)
            assert not any(h.startswith("x-meter") for h in r.headers)


def test_resumed_session_keeps_its_session(claude, server, fakes, tmp_path):
    """`--resume` continues the conversation under the same X-Claude-Code-Session-Id."""
    home = tmp_path / "home"
    chat_calls = 0
    sessions = []
    for extra in ([], ["--resume"]):
        for f in fakes.values():
            f.reset()
        resume = [*extra, sessions[0]] if extra else []
        out = run_claude(claude, server, home, "--model", "mistral-large", *resume)
        sessions.append(out["session_id"])
        calls = fake_counts(fakes["vllm"], "/v1/chat/completions", FAKE_KEYS["vllm"])
        assert calls
        chat_calls += len(calls)
    assert sessions[0] == sessions[1]
    events = rows(server["db"], sessions[0], chat_calls)
    assert {(e["user"], e["backend"]) for e in events} == {("cc-dev", "vllm")}
