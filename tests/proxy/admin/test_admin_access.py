"""Who may use /admin/* (docs/governance.md): the admin key, always, except in the simulated
open mode for loopback clients; `serve` refuses real backends with no admin key unless told to
go without the admin API. And the CLI of keys and budgets against a running gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from proxy.gateway.auth import check_admin
from proxy.gateway.errors import ProxyError
from tests.conftest import backend_models
from tests.support import Gateway

TOKENMETER = Path(sys.executable).with_name("tokenmeter")
ADMIN_PATHS = ["/admin/keys", "/admin/usage", "/admin/budgets", "/admin/tco"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMETER_")}
    return env | extra


@pytest.fixture(scope="module")
def unguarded(fakes, tmp_path_factory) -> Iterator[Gateway]:
    """Real (fake) backends, keys not required, no admin key: once, the admin API was open."""
    gw = Gateway(
        tmp_path_factory.mktemp("unguarded") / "tm.db",
        {"models": backend_models(fakes), "auth": {"required": False, "admin_key": None}},
    ).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Iterator[Gateway]:
    """The simulated open mode: every backend simulated, no admin key."""
    gw = Gateway(tmp_path_factory.mktemp("simulated") / "tm.db", {"auth": {"admin_key": None}})
    yield gw.start()
    gw.stop()


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_open_mode_with_real_backends_keeps_the_admin_api_closed(unguarded, path):
    r = httpx.get(unguarded.url + path)
    assert r.status_code == 401
    assert "TOKENMETER_ADMIN_KEY" in r.json()["error"]["message"]


def test_nobody_can_mint_keys_without_the_admin_key(unguarded):
    assert httpx.post(unguarded.url + "/admin/keys", json={"user": "x"}).status_code == 401


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_simulated_open_mode_answers_loopback_without_a_key(simulated, path):
    assert httpx.get(simulated.url + path).status_code == 200


@pytest.mark.parametrize("host", ["10.0.0.5", "192.168.1.20", "2001:db8::1", None])
def test_simulated_open_mode_refuses_other_hosts(host):
    with pytest.raises(ProxyError) as exc:
        check_admin({}, None, open_mode=True, client_host=host)
    assert exc.value.status == 401


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1"])
def test_simulated_open_mode_admits_loopback_hosts(host):
    check_admin({}, None, open_mode=True, client_host=host)


def test_an_admin_key_is_needed_even_on_loopback_once_it_is_set():
    with pytest.raises(ProxyError):
        check_admin({}, "secret", open_mode=True, client_host="127.0.0.1")
    check_admin({"authorization": "Bearer secret"}, "secret", open_mode=True)


def real_backend_config(tmp_path: Path, fakes, **auth: object) -> Path:
    path = tmp_path / "tm.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": backend_models(fakes)[:1],
                "auth": auth,
                "storage": {"url": f"sqlite:///{tmp_path / 'tm.db'}"},
            }
        )
    )
    return path


def serve(config: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOKENMETER), "serve", "--config", str(config), "--port", "1"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_serve_refuses_real_backends_without_an_admin_key(fakes, tmp_path):
    done = serve(real_backend_config(tmp_path, fakes))
    assert done.returncode == 2
    assert "no admin key is set" in done.stderr
    assert "allow_no_admin_key" in done.stderr


# --- the CLI -----------------------------------------------------------------------------------


def cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOKENMETER), *args],
        env=clean_env(TOKENMETER_STORAGE__URL=gateway.db_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keys_list_shows_service_keys(simulated):
    made = cli(simulated, "keys", "create", "--user", "hr-app", "--service")
    assert made.returncode == 0, made.stderr
    listed = cli(simulated, "keys", "list")
    [line] = [ln for ln in listed.stdout.splitlines() if " hr-app " in ln]
    assert " service " in line
    assert "kind" in listed.stdout.splitlines()[0]


def test_budgets_cli_creates_lists_and_deletes(simulated):
    made = cli(simulated, "budgets", "create", "--scope", "team", "--subject", "cli-team",
               "--usd", "12.5", "--tokens", "1000")  # fmt: skip
    assert made.returncode == 0, made.stderr
    budget_id = made.stdout.split()[1].rstrip(":")
    listed = cli(simulated, "budgets", "list")
    [line] = [ln for ln in listed.stdout.splitlines() if ln.startswith(budget_id)]
    assert "team:cli-team:month" in line and "$12.50 + 1,000 tok" in line and "ok" in line
    seen = httpx.get(simulated.url + "/admin/budgets", params={"fresh": "true"}).json()
    assert any(b["id"] == budget_id and b["limit_micro_usd"] == 12_500_000 for b in seen)
    again = cli(simulated, "budgets", "create", "--scope", "team", "--subject", "cli-team",
                "--usd", "1")  # fmt: skip
    assert again.returncode == 1 and "exists already" in again.stderr
    assert cli(simulated, "budgets", "delete", budget_id).returncode == 0
    assert cli(simulated, "budgets", "delete", budget_id).returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--scope", "galaxy", "--subject", "x", "--usd", "1"],
        ["--scope", "team", "--subject", "x"],
        ["--scope", "team", "--subject", "x", "--usd", "1", "--period", "year"],
        ["--scope", "team", "--subject", "x", "--usd=-1"],
    ],
    ids=["scope", "no-limit", "period", "negative"],
)
def test_budgets_cli_refuses_bad_input_with_exit_2(simulated, args):
    done = cli(simulated, "budgets", "create", *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
