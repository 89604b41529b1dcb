"""No prompt or completion text ever reaches the ledger."""

from __future__ import annotations

import os
from pathlib import Path

import anthropic
import openai

from tests.support import Gateway

SECRET = "zebra-quartz-4417-confidential"


def test_database_files_hold_no_prompt_or_completion_text(gateway: Gateway, api_key, session_id):
    oai = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    )
    reply = oai.chat.completions.create(
        model="vllm-model",
        messages=[
            {"role": "system", "content": f"system {SECRET}"},
            {"role": "user", "content": f"tell me about {SECRET}"},
        ],
    )
    list(
        oai.chat.completions.create(
            model="claude", stream=True, messages=[{"role": "user", "content": f"stream {SECRET}"}]
        )
    )
    oai.embeddings.create(model="vllm-model", input=f"embed {SECRET}")
    anthropic.Anthropic(
        base_url=gateway.url,
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Meter-Session": session_id},
    ).messages.create(
        model="claude", max_tokens=32, messages=[{"role": "user", "content": f"native {SECRET}"}]
    )
    gateway.wait_events(4, "session = :s", s=session_id)
    completion = reply.choices[0].message.content
    assert completion
    db = gateway.db_url.removeprefix("sqlite:///")
    stored = b"".join(Path(p).read_bytes() for p in (db, db + "-wal") if os.path.exists(p))
    assert SECRET.encode() not in stored
    assert completion.encode() not in stored
