"""The root, unknown paths and wrong methods, and admin validation errors: always the client
family's error shape, never the framework's ``{"detail": ...}``."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.support import Gateway


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_root_answers_200_with_the_product_name(gateway: Gateway, method):
    r = httpx.request(method, gateway.url + "/")
    assert r.status_code == 200
    if method == "GET":
        assert r.json()["name"] == "tokenmeter"
        assert "POST /v1/messages" in r.json()["endpoints"]


def assert_openai_shape(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert "detail" not in body
    assert set(body["error"]) >= {"message", "type", "code"}
    return str(body["error"]["message"])


def assert_anthropic_shape(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and "detail" not in body
    assert set(body["error"]) == {"type", "message"}
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/v1/audio/speech"),
        ("GET", "/v1/files/x/y"),
        ("GET", "/v1/chat"),
        ("DELETE", "/v2/models"),
        ("POST", "/admin/nothing"),
    ],
)
def test_unknown_paths_answer_openai_shape_naming_the_endpoints(gateway, method, path):
    message = assert_openai_shape(httpx.request(method, gateway.url + path), 404)
    assert path in message and "POST /v1/chat/completions" in message


@pytest.mark.parametrize("path", ["/v1/messages/batches", "/v1/messages/x/y", "/v1/messagesx"])
def test_unknown_paths_under_messages_answer_anthropic_shape(gateway, path):
    message = assert_anthropic_shape(httpx.post(gateway.url + path, json={}), 404)
    assert "POST /v1/messages" in message


@pytest.mark.parametrize(
    ("method", "path", "allowed", "anthropic_shape"),
    [
        ("GET", "/v1/chat/completions", "POST", False),
        ("PUT", "/v1/embeddings", "POST", False),
        ("GET", "/v1/messages", "POST", True),
        ("DELETE", "/v1/messages/count_tokens", "POST", True),
        ("POST", "/v1/models", "GET", False),
        ("POST", "/healthz", "GET", False),
        ("PUT", "/admin/keys", "POST", False),
    ],
)
def test_wrong_methods_are_405_in_the_family_shape(gateway, method, path, allowed, anthropic_shape):
    r = httpx.request(method, gateway.url + path)
    check = assert_anthropic_shape if anthropic_shape else assert_openai_shape
    message = check(r, 405)
    assert method in message and allowed in message
    assert allowed in r.headers["allow"]


def test_sdks_see_their_own_not_found_error(gateway, api_key):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.files.list()
    a = anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as exc:
        a.messages.batches.list()
    assert exc.value.response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    "body",
    [{}, {"user": ""}, {"user": "a", "team": 5}, {"user": "x" * 200}],
    ids=["missing-user", "empty-user", "int-team", "long-user"],
)
def test_admin_validation_errors_are_openai_shaped_422(gateway, body):
    r = httpx.post(gateway.url + "/admin/keys", json=body, headers=gateway.admin_headers)
    message = assert_openai_shape(r, 422)
    assert "user" in message or "team" in message


def test_admin_bad_json_is_openai_shaped(gateway):
    r = httpx.post(
        gateway.url + "/admin/keys",
        content=b"{not json",
        headers={**gateway.admin_headers, "content-type": "application/json"},
    )
    assert_openai_shape(r, 422)


def test_admin_not_found_keeps_its_message(gateway):
    r = httpx.delete(gateway.url + "/admin/keys/key_nope", headers=gateway.admin_headers)
    assert "key_nope" in assert_openai_shape(r, 404)
