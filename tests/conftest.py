from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from proxy.simulated import FakeServer, create_anthropic_app, create_openai_app
from tests import services
from tests.support import Gateway

FAKE_KEYS = {
    "vllm": "vllm-secret",
    "tgi": "",
    "azure": "azure-secret",
    "anthropic": "anthropic-secret",
}


@pytest.fixture(scope="session")
def fakes() -> Iterator[dict[str, FakeServer]]:
    servers = {
        "vllm": FakeServer(create_openai_app("vllm", api_key=FAKE_KEYS["vllm"])).start(),
        "tgi": FakeServer(create_openai_app("tgi")).start(),
        "azure": FakeServer(create_openai_app("azure", api_key=FAKE_KEYS["azure"])).start(),
        "anthropic": FakeServer(create_anthropic_app(api_key=FAKE_KEYS["anthropic"])).start(),
    }
    os.environ["TM_TEST_VLLM_KEY"] = FAKE_KEYS["vllm"]
    os.environ["TM_TEST_AZURE_KEY"] = FAKE_KEYS["azure"]
    os.environ["TM_TEST_ANTHROPIC_KEY"] = FAKE_KEYS["anthropic"]
    yield servers
    for server in servers.values():
        server.stop()


def backend_models(fakes: dict[str, FakeServer]) -> list[dict[str, Any]]:
    """One model alias per backend type, each on its fake."""
    return [
        {
            "name": "vllm-model",
            "deployments": [
                {
                    "backend": "vllm",
                    "model": "mistralai/Mistral-7B-Instruct-v0.3",
                    "api_base": fakes["vllm"].url + "/v1",
                    "api_key_env": "TM_TEST_VLLM_KEY",
                }
            ],
        },
        {
            "name": "tgi-model",
            "deployments": [
                {
                    "backend": "tgi",
                    "model": "mistralai/Mistral-Small-24B-Instruct-2501",
                    "api_base": fakes["tgi"].url + "/v1",
                }
            ],
        },
        {
            "name": "azure-mistral",
            "deployments": [
                {
                    "backend": "azure_mistral",
                    "model": "mistral-large-3",
                    "api_base": fakes["azure"].url + "/models",
                    "api_key_env": "TM_TEST_AZURE_KEY",
                }
            ],
        },
        {
            "name": "claude",
            "deployments": [
                {
                    "backend": "anthropic",
                    "model": "claude-sonnet-4-5",
                    "api_base": fakes["anthropic"].url,
                    "api_key_env": "TM_TEST_ANTHROPIC_KEY",
                }
            ],
        },
        {
            "name": "compat-model",
            "deployments": [
                {
                    "backend": "openai_compatible",
                    "model": "some-model",
                    "api_base": fakes["vllm"].url + "/v1",
                    "api_key_env": "TM_TEST_VLLM_KEY",
                }
            ],
        },
    ]


@pytest.fixture(scope="module")
def gateway(
    fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    db = tmp_path_factory.mktemp("ledger") / "tokenmeter.db"
    gw = Gateway(
        db,
        {
            "models": backend_models(fakes),
            "use_cases": {
                "coding": {"agents": ["claude-code", "vibe"]},
                "rag": {"agents": ["kb-search"]},
            },
            "limits": {"max_body_bytes": 256 * 1024},
        },
    ).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def api_key(gateway: Gateway) -> str:
    return gateway.create_key(user="alice", team="platform")


@pytest.fixture
def session_id() -> str:
    """A fresh session per test, so each test finds exactly its own events."""
    return "s-" + uuid.uuid4().hex[:12]


@pytest.fixture
def tmp_db(tmp_path: Path) -> Path:
    return tmp_path / "tokenmeter.db"


def pytest_configure(config: pytest.Config) -> None:
    services.bind_session(config)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """The test PostgreSQL server's admin URL (TOKENMETER_TEST_PG_URL), started if need be."""
    with services.postgres() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server's URL (TOKENMETER_TEST_REDIS_URL), started if need be; tests share it,
    each under a key prefix of its own."""
    with services.redis() as url:
        yield url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    name = "tm_" + uuid.uuid4().hex[:12]
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield pg_admin_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded SQLite ledger and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("pg_url"))
