"""The CLI's listings read at 80 columns: real commands on a real SQLite ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def tokenmeter(config: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMETER_")}
    done = subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env | {"COLUMNS": "80"},
        check=True,
    )
    return done.stdout


def test_keys_and_budgets_lists_fit_80_columns_and_line_up(tmp_path: Path) -> None:
    config = tmp_path / "tokenmeter.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
                "budgets": {
                    "limits": [{"scope": "team", "subject": "payments", "limit_usd": 5000}]
                },
            }
        )
    )
    tokenmeter(config, "keys", "create", "--user", "alice", "--team", "platform")
    tokenmeter(config, "keys", "create", "--user", "hr-app", "--team", "people", "--service")
    tokenmeter(
        config, "budgets", "create", "--scope", "user", "--subject", "alice", "--tokens", "10000000"
    )
    keys = tokenmeter(config, "keys", "list").splitlines()
    budgets = tokenmeter(config, "budgets", "list").splitlines()
    for lines in (keys, budgets):
        assert len(lines) == 3, lines
        assert max(map(len, lines)) <= 80, lines
    # left-aligned columns start where their header does
    status_at = keys[0].index("status")
    assert [line[status_at:].split()[0] for line in keys[1:]] == ["active", "active"]
    kind_at = keys[0].index("kind")
    assert [line[kind_at:].split()[0] for line in keys[1:]] == ["user", "service"]
    # right-aligned ones end where their header does
    used_end = budgets[0].index("used") + len("used")
    assert all(line[:used_end].endswith("0%") for line in budgets[1:]), budgets
    assert budgets[1].split()[:2] == ["config", "team:payments:month"], budgets
