"""Weights, stickiness, fallback and the circuit breaker."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.gateway.balancer import Breaker
from proxy.simulated import FakeServer
from tests.support import Gateway, serving, wait_for


class FlakyUpstream:
    """An OpenAI-shaped upstream whose behaviour the test sets: ok, 500, 429 or slow."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        self.calls += 1
        if self.mode in ("500", "429"):
            status = int(self.mode)
            return JSONResponse(
                {
                    "error": {
                        "message": f"flaky {status}",
                        "type": "Error",
                        "param": None,
                        "code": status,
                    }
                },
                status_code=status,
            )
        if self.mode == "slow":
            await asyncio.sleep(2)
        return JSONResponse(
            {
                "id": "x",
                "object": "chat.completion",
                "model": "flaky",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "flaky ok"},
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def flaky() -> Iterator[tuple[FlakyUpstream, FakeServer]]:
    upstream = FlakyUpstream()
    server = FakeServer(upstream.app).start()  # type: ignore[arg-type]
    yield upstream, server
    server.stop()


@pytest.fixture(scope="module")
def gateway(fakes, flaky, tmp_path_factory) -> Iterator[Gateway]:
    good = {
        "backend": "vllm",
        "model": "good",
        "api_base": fakes["vllm"].url + "/v1",
        "api_key_env": "TM_TEST_VLLM_KEY",
        "weight": 1,
    }
    flaky_dep = {
        "backend": "openai_compatible",
        "model": "flaky",
        "weight": 1000,
        "api_base": flaky[1].url + "/v1",
        "timeout_s": 0.4,
    }
    dead = {
        "backend": "vllm",
        "model": "dead",
        "weight": 1000,
        "api_base": f"http://127.0.0.1:{closed_port()}/v1",
    }
    gw = Gateway(
        tmp_path_factory.mktemp("routing") / "tm.db",
        {
            "routing": {"failures_to_open": 2, "cooldown_s": 0.5},
            "models": [
                {
                    "name": "split",
                    "deployments": [
                        {**good, "weight": 95},
                        {**good, "model": "pilot", "weight": 5},
                    ],
                },
                {
                    "name": "sticky",
                    "sticky": "session",
                    "deployments": [
                        {**good, "weight": 50},
                        {**good, "model": "pilot", "weight": 50},
                    ],
                },
                {"name": "via-flaky", "deployments": [flaky_dep, good]},
                {"name": "via-dead", "deployments": [dead, good]},
                {"name": "no-fallback", "max_attempts": 1, "deployments": [flaky_dep, good]},
            ],
        },
    ).start()
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def closed_breakers(request: pytest.FixtureRequest) -> None:
    """Each test starts with every breaker closed: earlier failures must not leak in."""
    if "gateway" in request.fixturenames:
        breakers = request.getfixturevalue("gateway").app.state.runtime.router.breakers
        for name, old in breakers.items():
            breakers[name] = Breaker(old.failures_to_open, old.cooldown_s)


def chat(
    gw: Gateway, key: str, model: str, session: str, *, stream: bool = False, text: str = "hi"
) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        timeout=30,
        json={"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {key}", "X-Meter-Session": session},
    )


def test_split_through_the_gateway_is_exact(gateway, api_key):
    for i in range(400):
        assert chat(gateway, api_key, "split", f"split-{i}").status_code == 200
    events = gateway.wait_events(400, "model = 'split'")
    assert Counter(e["upstream_model"] for e in events) == {"good": 380, "pilot": 20}


def test_sticky_alias_keeps_each_session_on_one_deployment(gateway, api_key):
    for session, _ in itertools.product(range(30), range(3)):
        chat(gateway, api_key, "sticky", f"sticky-{session}").raise_for_status()
    events = gateway.wait_events(90, "model = 'sticky'")
    homes: dict[str, set[str]] = {}
    for e in events:
        homes.setdefault(e["session"], set()).add(e["upstream_model"])
    assert all(len(h) == 1 for h in homes.values())
    assert {next(iter(h)) for h in homes.values()} == {"good", "pilot"}


@pytest.mark.parametrize(
    ("mode", "status"), [("500", "upstream_error"), ("429", "upstream_error"), ("slow", "timeout")]
)
def test_fallback_moves_a_failed_request_and_meters_both_attempts(
    gateway, api_key, flaky, session_id, mode, status
):
    flaky[0].mode = mode
    try:
        r = chat(gateway, api_key, "via-flaky", session_id)
    finally:
        flaky[0].mode = "ok"
    assert r.status_code == 200 and r.json()["model"] == "good"
    first, second = gateway.wait_events(2, "session = :s", s=session_id)
    assert (first["attempt"], first["status"], first["upstream_model"]) == (1, status, "flaky")
    assert (second["attempt"], second["status"], second["upstream_model"]) == (2, "ok", "good")
    assert first["request_id"] == second["request_id"] == first["id"]


def test_fallback_on_refused_connection(gateway, api_key, session_id):
    assert chat(gateway, api_key, "via-dead", session_id).status_code == 200
    events = gateway.wait_events(2, "session = :s", s=session_id)
    assert [e["status"] for e in events] == ["upstream_error", "ok"]


def test_attempt_budget_of_one_means_no_fallback(gateway, api_key, flaky, session_id):
    flaky[0].mode = "500"
    try:
        assert chat(gateway, api_key, "no-fallback", session_id).status_code == 502
    finally:
        flaky[0].mode = "ok"
    assert len(gateway.wait_events(1, "session = :s", s=session_id)) == 1


def test_no_fallback_after_the_first_streamed_byte(gateway, api_key, fakes, session_id):
    # "split" sends to the vLLM fake, which cuts the stream after 3 chunks: the client has
    # bytes already, so the request must not move to another deployment
    r = chat(
        gateway,
        api_key,
        "split",
        session_id,
        stream=True,
        text="[[fake:cut_after=3]] [[fake:words=20]]",
    )
    assert r.status_code == 200 and "upstream_error" in r.text.strip().splitlines()[-1]
    [event] = gateway.wait_events(1, "session = :s", s=session_id)
    assert event["status"] == "upstream_error" and event["attempt"] == 1


def test_circuit_opens_then_closes_after_recovery(gateway, api_key, flaky, session_id):
    upstream, _server = flaky
    upstream.mode = "500"
    for i in range(2):  # two failures open the breaker (failures_to_open: 2)
        chat(gateway, api_key, "via-flaky", f"{session_id}-{i}").raise_for_status()
    calls = upstream.calls
    chat(gateway, api_key, "via-flaky", f"{session_id}-open").raise_for_status()
    assert upstream.calls == calls  # open: the flaky deployment is skipped
    upstream.mode = "ok"

    def recovered() -> bool:  # after the cool-down one trial goes through and closes it
        r = chat(gateway, api_key, "via-flaky", f"{session_id}-probe")
        return r.json()["model"] == "flaky"

    wait_for(recovered, timeout_s=5, interval_s=0.1)
    assert not gateway.app.state.runtime.router.breakers["openai_compatible/flaky"].is_open


def test_weights_change_when_the_config_file_changes(fakes, tmp_path):

    import yaml

    def write(good: int, pilot: int) -> None:
        dep = {
            "backend": "vllm",
            "api_base": fakes["vllm"].url + "/v1",
            "api_key_env": "TM_TEST_VLLM_KEY",
        }
        config.write_text(
            yaml.safe_dump(
                {
                    "auth": {"required": False},
                    "storage": {
                        "url": f"sqlite:///{tmp_path / 'tm.db'}",
                        "journal_dir": str(tmp_path / "journal"),
                    },
                    "models": [
                        {
                            "name": "m",
                            "deployments": [
                                {**dep, "model": "good", "weight": good},
                                {**dep, "model": "pilot", "weight": pilot},
                            ],
                        }
                    ],
                }
            )
        )

    def served_by() -> str:
        r = httpx.post(
            url + "/v1/chat/completions",
            timeout=30,
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        return str(r.json()["model"])

    config = tmp_path / "tm.yaml"
    write(100, 0)
    with serving(config) as url:
        assert {served_by() for _ in range(5)} == {"good"}
        write(0, 100)
        wait_for(lambda: served_by() == "pilot", timeout_s=10, interval_s=0.2)
        assert {served_by() for _ in range(5)} == {"pilot"}
