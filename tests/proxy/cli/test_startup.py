"""Start-up errors are one line on stderr with exit code 2 (configuration) or 3 (a dependency
that is not there), before any worker starts; never a traceback, never a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import free_port, serving


def run(tmp_path: Path, *args: str, config: dict[str, Any], **env: str) -> tuple[int, list[str]]:
    """``tokenmeter ARGS --config`` with ``config`` (a SQLite ledger and journal in tmp_path
    unless it says otherwise): its exit code and its stderr lines."""
    storage = {"url": f"sqlite:///{tmp_path / 'tm.db'}", "journal_dir": str(tmp_path / "j")}
    full = {**config, "storage": {**storage, **config.get("storage", {})}}
    path = tmp_path / "tm.yaml"
    path.write_text(yaml.safe_dump(full))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENMETER_", "TM_UNSET"))}
    if args[0] == "serve":
        args = (*args, "--port", str(free_port()))
    done = subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )
    # the error is one line; warnings logged before it (a deprecated price key) are not errors
    lines = [x for x in done.stderr.splitlines() if x.strip() and " WARNING " not in x]
    return done.returncode, lines


def one_line(lines: list[str]) -> str:
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [("serve",), ("keys", "list"), ("db", "upgrade")])
def test_an_unreachable_database_names_host_and_port_and_exits_3(tmp_path, command):
    port = free_port()
    url = f"postgresql://postgres:s3cret@127.0.0.1:{port}/tm"
    code, lines = run(tmp_path, *command, config={"storage": {"url": url}})
    line = one_line(lines)
    assert code == 3
    assert f"127.0.0.1:{port}" in line and "storage.url" in line
    assert "s3cret" not in line


def test_an_unresolvable_database_host_is_named(tmp_path):
    url = "postgresql+psycopg://postgres@no-such-host.invalid:6543/tm"
    code, lines = run(tmp_path, "serve", config={"storage": {"url": url}})
    assert code == 3 and "no-such-host.invalid:6543" in one_line(lines)


def test_an_unopenable_sqlite_file_exits_3(tmp_path):
    (tmp_path / "file").write_text("")
    url = f"sqlite:///{tmp_path / 'file' / 'tm.db'}"
    code, lines = run(tmp_path, "serve", config={"storage": {"url": url}})
    assert code == 3 and str(tmp_path / "file" / "tm.db") in one_line(lines)


@pytest.mark.parametrize(
    "url",
    ["mysql://user:s3cret@db/tm", "redis://127.0.0.1:6379/0", "not a url", "oracle://u@h/x"],
)
def test_an_unsupported_database_url_exits_2(tmp_path, url):
    code, lines = run(tmp_path, "serve", config={"storage": {"url": url}})
    line = one_line(lines)
    assert code == 2 and "storage.url" in line and "s3cret" not in line


def test_an_uncreatable_journal_directory_exits_3(tmp_path):
    (tmp_path / "file").write_text("")
    journal = tmp_path / "file" / "journal"
    code, lines = run(tmp_path, "serve", config={"storage": {"journal_dir": str(journal)}})
    line = one_line(lines)
    assert code == 3 and str(journal) in line and "storage.journal_dir" in line


def deployment(**fields: Any) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "m",
                "deployments": [
                    {"backend": "vllm", "model": "x", "api_base": "http://127.0.0.1:9/v1", **fields}
                ],
            }
        ]
    }


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_api_key_env_refuses_to_start_naming_it(tmp_path, value):
    env = {} if value is None else {"TM_UNSET_KEY": value}
    code, lines = run(tmp_path, "serve", config=deployment(api_key_env="TM_UNSET_KEY"), **env)
    line = one_line(lines)
    assert code == 2 and "TM_UNSET_KEY" in line and "models.0.deployments.0" in line


def test_a_simulated_deployment_starts_without_its_key(tmp_path):
    config = tmp_path / "tm.yaml"
    storage = {"url": f"sqlite:///{tmp_path / 'tm.db'}", "journal_dir": str(tmp_path / "j")}
    models = deployment(api_key_env="TM_UNSET_KEY", simulated=True)
    config.write_text(yaml.safe_dump({"storage": storage, **models}))
    with serving(config) as url:
        assert httpx.get(url + "/healthz").status_code == 200


def test_a_set_api_key_env_starts(tmp_path):
    config = tmp_path / "tm.yaml"
    storage = {"url": f"sqlite:///{tmp_path / 'tm.db'}", "journal_dir": str(tmp_path / "j")}
    config.write_text(yaml.safe_dump({"storage": storage, **deployment(api_key_env="TM_SET_KEY")}))
    with serving(config, env={"TM_SET_KEY": "k"}) as url:
        assert httpx.get(url + "/healthz").status_code == 200


def test_an_invalid_config_value_exits_2_in_one_line(tmp_path):
    code, lines = run(tmp_path, "serve", config={"storage": {"flush_interval_s": -1}})
    assert code == 2 and "storage.flush_interval_s" in one_line(lines)


def test_a_price_key_missing_from_the_price_map_is_a_warning_not_a_failed_start(tmp_path):
    config = tmp_path / "tm.yaml"
    storage = {"url": f"sqlite:///{tmp_path / 'tm.db'}", "journal_dir": str(tmp_path / "j")}
    models = [
        {
            "name": "large",
            "deployments": [
                {
                    "backend": "azure_mistral",
                    "model": "mistral-large-2407",
                    "name": "azure-large",
                    "api_base": "http://127.0.0.1:9/models",
                    "price_key": "azure_ai/vanished-2407",
                },
                {
                    "backend": "azure_mistral",
                    "model": "mistral-large-3",
                    "name": "priced",
                    "api_base": "http://127.0.0.1:9/models",
                },
            ],
        }
    ]
    config.write_text(yaml.safe_dump({"storage": storage, "models": models}))
    log = tmp_path / "serve.log"
    with serving(config, log=log) as url:
        assert httpx.get(url + "/healthz").status_code == 200
    [warning] = [x for x in log.read_text().splitlines() if "price map" in x]
    assert "WARNING" in warning and "'azure_ai/vanished-2407'" in warning
    assert "azure-large of large" in warning
