"""The request log: one JSON line per metered attempt, matching the ledger, with no prompt text
and no key, to a file or stdout, and documented field by field."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import yaml

from proxy.gateway.observability.request_log import LOGGER
from proxy.simulated import FakeServer
from tests.conftest import backend_models
from tests.support import Gateway, free_port, serving, wait_for

ROOT = Path(__file__).resolve().parents[3]
FIELDS = [
    "time",
    "request_id",
    "event_id",
    "attempt",
    "key_id",
    "user",
    "team",
    "agent",
    "session",
    "use_case",
    "model",
    "deployment",
    "backend",
    "upstream_model",
    "on_prem",
    "stream",
    "status",
    "http_status",
    "error_code",
    "error_detail",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost_micro_usd",
    "latency_ms",
    "ttft_ms",
    "overhead_ms",
]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("request-log") / "requests.jsonl"


@pytest.fixture(scope="module")
def logged(
    fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory, log_file: Path
) -> Iterator[Gateway]:
    """A gateway logging requests to a file; a fallback alias whose first deployment is down.
    The in-process server leaves Python's root level at WARNING, so the test opens INFO as
    ``tokenmeter serve --log-level info`` does."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    models = backend_models(fakes)
    models.append(
        {
            "name": "fallback-model",
            "deployments": [
                {
                    "backend": "vllm",
                    "model": "down",
                    "api_base": f"http://127.0.0.1:{free_port()}/v1",
                },
                {**models[0]["deployments"][0], "name": "vllm-up"},
            ],
            "max_attempts": 2,
        }
    )
    gw = Gateway(
        tmp_path_factory.mktemp("request-log-ledger") / "tm.db",
        {
            "models": models,
            "use_cases": {"coding": {"agents": ["vibe"]}},
            "request_log": {"file": str(log_file)},
        },
    ).start()
    yield gw
    gw.stop()
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="module")
def key(logged: Gateway) -> str:
    return logged.create_key(user="alice", team="platform")


def lines(path: Path, session: str, n: int) -> list[dict[str, Any]]:
    """The ``n`` log lines of ``session``, once they are all written."""

    def found() -> list[dict[str, Any]]:
        text = path.read_text() if path.exists() else ""
        mine = [orjson.loads(x) for x in text.splitlines() if f'"session":"{session}"' in x]
        return mine if len(mine) >= n else []

    got = wait_for(found)
    assert len(got) == n, got
    return got


def chat(gw: Gateway, key: str, session: str, model: str, text: str, **kw: Any) -> Any:
    client = openai.OpenAI(  # not closed here: a returned stream still reads through it
        base_url=gw.url + "/v1",
        api_key=key,
        max_retries=0,
        default_headers={"X-Meter-Session": session, "X-Meter-Agent": "vibe"},
    )
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def test_a_request_is_one_line_that_matches_its_usage_event(logged, key, session_id, log_file):
    chat(logged, key, session_id, "azure-mistral", "hello there")
    [line] = lines(log_file, session_id, 1)
    [event] = logged.wait_events(1, "session = :s", s=session_id)
    assert list(line) == FIELDS
    assert line["request_id"] == event["request_id"] and line["event_id"] == event["id"]
    assert (line["key_id"], line["user"], line["team"]) == (event["key_id"], "alice", "platform")
    assert (line["agent"], line["use_case"]) == ("vibe", "coding")
    assert (line["model"], line["backend"], line["deployment"]) == (
        "azure-mistral",
        "azure_mistral",
        event["deployment"],
    )
    assert (line["status"], line["http_status"], line["error_code"]) == ("ok", 200, None)
    for name in ("input_tokens", "cache_read_tokens", "output_tokens", "cost_micro_usd"):
        assert line[name] == event[name], name
    assert line["output_tokens"] > 0 and line["cost_micro_usd"] > 0
    assert line["latency_ms"] >= line["overhead_ms"] > 0
    assert line["time"].endswith("+00:00") and line["stream"] is False


def test_a_stream_logs_its_time_to_first_token(logged, key, session_id, log_file):
    stream = chat(logged, key, session_id, "vllm-model", "hi", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    [line] = lines(log_file, session_id, 1)
    assert line["stream"] is True and line["status"] == "ok"
    assert 0 < line["ttft_ms"] <= line["latency_ms"]


def test_anthropic_messages_are_logged(logged, key, session_id, log_file):
    with anthropic.Anthropic(
        base_url=logged.url,
        api_key=key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    ) as client:
        msg = client.messages.create(
            model="claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    [line] = lines(log_file, session_id, 1)
    assert (line["backend"], line["input_tokens"], line["output_tokens"]) == (
        "anthropic",
        msg.usage.input_tokens,
        msg.usage.output_tokens,
    )


def test_a_fallback_logs_each_attempt_under_one_request_id(logged, key, session_id, log_file):
    chat(logged, key, session_id, "fallback-model", "hi")
    first, second = sorted(lines(log_file, session_id, 2), key=lambda x: x["attempt"])
    assert first["request_id"] == second["request_id"]
    assert (first["attempt"], first["status"], first["error_code"]) == (
        1,
        "upstream_error",
        "upstream_unavailable",
    )
    assert (second["attempt"], second["status"], second["deployment"]) == (2, "ok", "vllm-up")


@pytest.mark.parametrize(
    ("model", "text", "status", "http_status", "code", "detail"),
    [
        ("vllm-model", "[[fake:status=429]]", "upstream_error", 429, "upstream_rate_limited", None),
        ("vllm-model", "[[fake:status=400]]", "client_error", 400, "upstream_rejected", None),
        (
            "vllm-model",
            "[[fake:status=503]]",
            "upstream_error",
            502,
            "upstream_error",
            "upstream 503",
        ),
        ("no-such-model", "hi", "client_error", 404, "model_not_found", None),
    ],
)
def test_failures_log_their_status_and_error_code(
    logged, key, session_id, log_file, model, text, status, http_status, code, detail
):
    with pytest.raises(openai.APIStatusError):
        chat(logged, key, session_id, model, text)
    [line] = lines(log_file, session_id, 1)
    assert (line["status"], line["http_status"], line["error_code"]) == (status, http_status, code)
    assert line["error_detail"] == detail


def test_no_prompt_text_and_no_key_are_logged(logged, key, session_id, log_file):
    secret = "prompt-" + uuid.uuid4().hex
    chat(logged, key, session_id, "vllm-model", secret)
    for _chunk in chat(logged, key, session_id, "claude", secret, stream=True):
        pass
    lines(log_file, session_id, 2)
    text = log_file.read_text()
    assert secret not in text and key not in text


def test_a_rotated_file_is_reopened_and_no_line_is_lost(logged, key, session_id, log_file):
    chat(logged, key, session_id, "vllm-model", "before")
    lines(log_file, session_id, 1)
    rotated = log_file.with_suffix(".1")
    log_file.rename(rotated)
    sent = 1

    def reopened() -> bool:  # the check runs at most once a second: keep asking until then
        nonlocal sent
        chat(logged, key, session_id, "vllm-model", "after")
        sent += 1
        return log_file.exists() and f'"session":"{session_id}"' in log_file.read_text()

    wait_for(reopened, timeout_s=10, interval_s=0.1)
    old = rotated.read_text().count(f'"session":"{session_id}"')
    assert old + len(lines(log_file, session_id, sent - old)) == sent


def served_lines(tmp_path: Path, *extra: str, config: dict[str, Any] | None = None) -> list[str]:
    """What ``tokenmeter serve`` (simulated backends) prints for one chat completion."""
    path = tmp_path / "tm.yaml"
    storage = {"url": f"sqlite:///{tmp_path / 'tm.db'}", "journal_dir": str(tmp_path / "j")}
    path.write_text(yaml.safe_dump({"storage": storage, **(config or {})}))
    out = tmp_path / "serve.log"
    with serving(path, *extra, log=out) as url:
        r = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "mistral-large", "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Meter-Session": "served"},
            timeout=30,
        )
        # a non-streamed answer is sent after its line was written and flushed
        assert r.status_code == 200
    return [x for x in out.read_text().splitlines() if x.startswith("{")]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_logs_to_stdout_at_info_by_default(tmp_path, workers):
    [line] = served_lines(tmp_path, "--workers", workers, "--log-level", "info")
    assert orjson.loads(line)["session"] == "served"


@pytest.mark.parametrize(
    ("extra", "config"),
    [
        (("--log-level", "warning"), None),
        (("--log-level", "info"), {"request_log": {"enabled": False}}),
    ],
)
def test_serve_request_log_can_be_turned_off(tmp_path, extra, config):
    assert served_lines(tmp_path, *extra, config=config) == []


def test_docs_describe_every_field():
    doc = (ROOT / "docs" / "observability.md").read_text()
    section = doc.split("## Request log", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\| `(\w+)` \|", section, re.M) == FIELDS
