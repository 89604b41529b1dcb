"""Real client CLIs from the npm registry, installed once per version into a cache directory.

The tests drive the same binaries users run (Claude Code, Codex). Each pinned version is
installed with ``npm install --prefix`` into ``$TOKENMETER_TEST_CACHE`` (default
``~/.cache/tokenmeter-tests``), so ``pytest`` on a fresh machine provisions them itself and later
runs reuse them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import services

CLAUDE_CODE = ("@anthropic-ai/claude-code", "2.1.332", "claude")
CODEX = ("@openai/codex", "0.171.0", "codex")


def cache_dir() -> Path:
    base = os.environ.get("TOKENMETER_TEST_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "tokenmeter-tests"


def installed_cli(package: str, version: str, binary: str) -> Path:
    """The path of ``binary`` from ``package@version``, installing it first when missing.

    Fails the test (never skips it) when node or npm is missing or the install fails."""
    prefix = cache_dir() / "npm" / f"{package.replace('/', '+')}@{version}"
    exe = prefix / "node_modules" / ".bin" / binary
    if exe.exists():
        return exe
    why = f"installing {package}@{version} for this test"
    services.program("node", package="nodejs", why=why)
    npm = services.program("npm", package="npm", why=why)
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"installing {package}@{version} from npm into {prefix} (once)")
    done = subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(prefix),
            f"{package}@{version}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not exe.exists():
        pytest.fail(f"npm install {package}@{version} failed:\n{done.stderr[-2000:]}")
    return exe
