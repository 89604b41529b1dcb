"""Virtual keys and the admin key against the running gateway (DESIGN.md §4.3): keys are random,
shown once, stored only as a hash; revocation takes effect on the next request; every refusal is a
401 in the client family's error shape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import inspect, text

from metering.keys import hash_key
from tests.support import ADMIN_KEY, Gateway, wait_for

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
TOKENMETER = Path(sys.executable).with_name("tokenmeter")


def oai(gateway: Gateway, key: str | None) -> openai.OpenAI:
    """A client; with ``key=None`` it sends no Authorization header at all."""
    if key is None:  # the SDK insists on a credential: drop it on the wire

        def strip_auth(request: httpx.Request) -> None:
            del request.headers["authorization"]

        http = httpx.Client(event_hooks={"request": [strip_auth]})
        return openai.OpenAI(
            base_url=gateway.url + "/v1", api_key="unused", max_retries=0, http_client=http
        )
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def claude(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def chat(gateway: Gateway, key: str | None) -> Any:
    return oai(gateway, key).chat.completions.create(
        model="vllm-model", messages=MESSAGES, max_tokens=5
    )


def new_key(gateway: Gateway, **fields: Any) -> tuple[str, str]:
    """A fresh key through the admin API: (id, key)."""
    r = httpx.post(
        f"{gateway.url}/admin/keys", json={"user": "alice", **fields}, headers=gateway.admin_headers
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def run_cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMETER_")}
    env["TOKENMETER_STORAGE__URL"] = gateway.db_url
    return subprocess.run(
        [str(TOKENMETER), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def models_status(gateway: Gateway, key: str) -> int:
    return httpx.get(
        f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}
    ).status_code


def assert_openai_error_body(response: httpx.Response) -> None:
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type", "code"} <= set(body["error"])
    assert body["error"]["type"] == "authentication_error"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# --- the client API ---------------------------------------------------------------------------


def test_no_key_is_401_in_openai_shape(gateway):
    with pytest.raises(openai.AuthenticationError) as exc:
        chat(gateway, None)
    assert exc.value.status_code == 401
    assert "authorization" not in exc.value.response.request.headers
    assert_openai_error_body(exc.value.response)


def test_unknown_key_is_401_in_openai_shape(gateway):
    with pytest.raises(openai.AuthenticationError) as exc:
        chat(gateway, "tm-not-a-real-key")
    assert exc.value.status_code == 401
    assert_openai_error_body(exc.value.response)


def test_401_error_code_is_invalid_api_key_on_chat_as_on_models(gateway):
    """/v1/models answers code "invalid_api_key"; chat completions should say the same."""
    models = httpx.get(
        f"{gateway.url}/v1/models", headers={"Authorization": "Bearer tm-not-a-real-key"}
    )
    assert models.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as exc:
        chat(gateway, "tm-not-a-real-key")
    assert exc.value.response.json()["error"]["code"] == "invalid_api_key"


def test_valid_key_works(gateway, api_key):
    assert chat(gateway, api_key).choices[0].message.content


def test_key_without_bearer_scheme_is_401(gateway, api_key):
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": api_key},
        json={"model": "vllm-model", "messages": MESSAGES},
    )
    assert r.status_code == 401


def test_x_api_key_is_not_accepted_on_chat_completions(gateway, api_key):
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"x-api-key": api_key},
        json={"model": "vllm-model", "messages": MESSAGES},
    )
    assert r.status_code == 401


def test_models_without_key_is_401(gateway):
    with pytest.raises(openai.AuthenticationError) as exc:
        oai(gateway, None).models.list()
    assert exc.value.status_code == 401
    assert_openai_error_body(exc.value.response)


def test_messages_with_x_api_key_works(gateway, api_key):
    msg = claude(gateway, api_key).messages.create(
        model="claude", max_tokens=20, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert msg.content[0].text


def test_messages_with_bearer_token_works(gateway, api_key):
    c = anthropic.Anthropic(base_url=gateway.url, auth_token=api_key, max_retries=0)
    msg = c.messages.create(
        model="claude", max_tokens=20, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert msg.content[0].text


def test_messages_with_bad_x_api_key_is_anthropic_401(gateway):
    with pytest.raises(anthropic.AuthenticationError) as exc:
        claude(gateway, "tm-not-a-real-key").messages.create(
            model="claude", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
    assert exc.value.status_code == 401
    body = exc.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["message"]


# --- revocation -------------------------------------------------------------------------------


def test_admin_revocation_takes_effect_on_the_next_request(gateway):
    key_id, key = new_key(gateway)
    assert chat(gateway, key).choices
    r = httpx.delete(f"{gateway.url}/admin/keys/{key_id}", headers=gateway.admin_headers)
    assert r.status_code == 200 and r.json() == {"id": key_id, "revoked": True}
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, key)


def test_revoking_twice_is_404(gateway):
    key_id, _ = new_key(gateway)
    first = httpx.delete(f"{gateway.url}/admin/keys/{key_id}", headers=gateway.admin_headers)
    second = httpx.delete(f"{gateway.url}/admin/keys/{key_id}", headers=gateway.admin_headers)
    assert (first.status_code, second.status_code) == (200, 404)


def test_cli_revocation_reaches_the_running_gateway(gateway):
    key_id, key = new_key(gateway)
    assert models_status(gateway, key) == 200
    done = run_cli(gateway, "keys", "revoke", key_id)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: models_status(gateway, key) == 401, timeout_s=5)
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, key)


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_created_key_works_at_once(gateway):
    done = run_cli(gateway, "keys", "create", "--user", "bob")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("tm-") and len(key.split()) == 1
    assert key not in done.stderr
    assert chat(gateway, key).choices


def test_cli_list_never_prints_the_key(gateway):
    key_id, key = new_key(gateway, user="carol")
    done = run_cli(gateway, "keys", "list")
    assert done.returncode == 0, done.stderr
    assert key_id in done.stdout
    output = done.stdout + done.stderr
    assert key not in output
    assert key[10:] not in output
    assert hash_key(key) not in output


# --- the admin API ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-admin-key"}, 401),
        ({"Authorization": f"Bearer {ADMIN_KEY}"}, 200),
    ],
    ids=["no-key", "wrong-key", "admin-key"],
)
def test_admin_keys_needs_the_admin_key(gateway, headers, status):
    assert httpx.get(f"{gateway.url}/admin/keys", headers=headers).status_code == status


def test_admin_refuses_a_virtual_key(gateway, api_key):
    for headers in ({"Authorization": f"Bearer {api_key}"}, {"x-api-key": api_key}):
        assert httpx.get(f"{gateway.url}/admin/keys", headers=headers).status_code == 401


def test_virtual_key_cannot_create_keys(gateway, api_key):
    r = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"user": "mallory"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert r.status_code == 401


def test_admin_key_list_never_shows_key_or_hash(gateway):
    key_id, key = new_key(gateway, user="dave")
    r = httpx.get(f"{gateway.url}/admin/keys", headers=gateway.admin_headers)
    assert r.status_code == 200
    rows = r.json()
    [mine] = [row for row in rows if row["id"] == key_id]
    assert mine["user"] == "dave" and key.startswith(mine["prefix"])
    for row in rows:
        assert "key" not in row and "key_hash" not in row
    assert key not in r.text
    assert key[10:] not in r.text
    assert hash_key(key) not in r.text


def test_key_is_shown_once_on_creation(gateway):
    r = httpx.post(
        f"{gateway.url}/admin/keys", json={"user": "erin"}, headers=gateway.admin_headers
    )
    assert r.status_code == 201
    created = r.json()
    assert created["key"].startswith("tm-")
    assert "key_hash" not in created
    other = httpx.post(
        f"{gateway.url}/admin/keys", json={"user": "erin"}, headers=gateway.admin_headers
    ).json()
    assert other["key"] != created["key"]


def test_database_stores_only_the_hash(gateway):
    key_id, key = new_key(gateway, user="frank", team="t", use_case="uc", agent="ag")
    assert chat(gateway, key).choices
    gateway.wait_events(1, "key_id = :k", k=key_id)
    with gateway.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT key_hash FROM api_keys WHERE id = :i"), {"i": key_id}
        ).scalar_one()
        assert stored == hash_key(key)
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for column, value in row._mapping.items():
                    assert key not in str(value), f"plaintext key in {table}.{column}"
                    assert key[10:] not in str(value), f"key body in {table}.{column}"
