"""The demo's gateway: ``tokenmeter serve`` in a child process, on the embedded SQLite default
(or the ledger the user names), with every backend simulated, keys not required and the
simulated clock on.

The child gets a scrubbed environment: no provider keys (they would route traffic to real,
paid APIs) and no other ``TOKENMETER_*`` settings (they could point it at a real ledger: the
demo's ledger is only ever the one passed on purpose).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROVIDER_KEYS = ("ANTHROPIC_API_KEY", "AZURE_AI_API_KEY", "AZURE_AI_ENDPOINT")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class GatewayError(RuntimeError):
    """The demo's gateway could not start; the message says why and where its log is."""


@dataclass(frozen=True, slots=True)
class DemoGateway:
    url: str
    ledger_url: str
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.directory / "gateway.log"


def free_port(port: int) -> int:
    """``port`` if it can be bound on 127.0.0.1 (0: any free port); GatewayError otherwise."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise GatewayError(f"port {port} is in use: pass --port") from exc
        return int(sock.getsockname()[1])


def child_env(
    directory: Path, *, tco_window_days: float, storage_url: str | None = None
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TOKENMETER_") and k not in PROVIDER_KEYS
    }
    env.update(
        TOKENMETER_STORAGE__URL=storage_url or f"sqlite:///{directory / 'ledger.db'}",
        TOKENMETER_STORAGE__JOURNAL_DIR=str(directory / "journal"),
        TOKENMETER_SIMULATED_CLOCK="true",
        TOKENMETER_TCO__WINDOW_DAYS=f"{tco_window_days:.3f}",
        TOKENMETER_TCO__INTERVAL_S="5",
    )
    return env


@contextmanager
def run_gateway(
    directory: Path, *, port: int, tco_window_days: float, storage_url: str | None = None
) -> Iterator[DemoGateway]:
    """Start the gateway, wait until it answers, and stop it (SIGINT, then SIGKILL) on exit.

    The ledger is a SQLite file in ``directory`` unless ``storage_url`` names another (the
    PostgreSQL database Grafana reads, say)."""
    port = free_port(port)
    env = child_env(directory, tco_window_days=tco_window_days, storage_url=storage_url)
    cmd = [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with (directory / "gateway.log").open("wb") as log:
        # Its own session: a Ctrl-C in the terminal reaches the demo only, which then asks the
        # gateway once to shut down gracefully (a second SIGINT would make uvicorn force it).
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gw = DemoGateway(f"http://127.0.0.1:{port}", env["TOKENMETER_STORAGE__URL"], directory, proc)
    try:
        _wait_healthy(gw)
        yield gw
    finally:
        stop(proc)


def _wait_healthy(gw: DemoGateway) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if gw.process.poll() is not None:
            raise GatewayError(f"the gateway exited at start; see {gw.log_path}")
        try:
            with urllib.request.urlopen(gw.url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)  # polling the child's socket until it listens
    raise GatewayError(
        f"the gateway did not answer within {START_TIMEOUT_S:.0f} s; see {gw.log_path}"
    )


def stop(proc: subprocess.Popen[bytes]) -> int:
    """Ask the gateway to shut down gracefully; kill it if it does not."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
