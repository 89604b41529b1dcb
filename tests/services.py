"""What the test session needs from the machine, provisioned by the session itself when missing.

``pytest`` on a fresh Debian machine with nothing but Python and the repository passes: each
test that needs an outside program asks for it here, and what is missing is installed from
Debian's packages (``apt-get``, when running as root) or started from them, once per session,
with a line on the terminal saying so:

- PostgreSQL at ``TOKENMETER_TEST_PG_URL`` (default ``127.0.0.1:5432``, user ``postgres``,
  database ``test``). When nothing answers there and the host is a loopback address, the session
  starts a throwaway cluster of its own in a temporary directory on that port (Debian's
  ``postgresql``), creates the database, and removes the cluster at the end.
- Redis at ``TOKENMETER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). When nothing
  answers there and the host is a loopback address, the session starts a ``redis-server``
  (Debian's ``redis-server``) bound to that address and port, with no persistence, and stops it
  at the end. Tests that need a Redis of their own start one with ``redis_server``.
- ``prometheus`` and ``promtool`` (Debian's ``prometheus``), ``node`` and ``npm`` (``nodejs``,
  ``npm``), LibreOffice (``libreoffice-calc``).

``TOKENMETER_TEST_PROVISION=0`` turns installing off: a missing program then fails its tests
with the command that would install it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import URL, make_url

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
START_TIMEOUT_S = 60.0

_config: pytest.Config | None = None
_apt_updated = False


def bind_session(config: pytest.Config) -> None:
    """Remember the session's config, so announcements reach the terminal past capturing."""
    global _config
    _config = config


def announce(message: str) -> None:
    """One line on the terminal, even from inside a captured test or fixture."""
    line = f"[test services] {message}"
    capture = _config.pluginmanager.get_plugin("capturemanager") if _config else None
    if capture is None:
        print(line, flush=True)
        return
    with capture.global_and_fixture_disabled():
        print(line, flush=True)


def install_debian_packages(packages: list[str], *, why: str) -> None:
    """``apt-get install`` ``packages``, or fail the test saying how, when that is not possible."""
    global _apt_updated
    command = "apt-get install " + " ".join(packages)
    if os.environ.get("TOKENMETER_TEST_PROVISION", "1") == "0":
        pytest.fail(f"{why}; installing is off (TOKENMETER_TEST_PROVISION=0): {command}")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(f"{why}; run as root on Debian to have it installed, or run: {command}")
    announce(f"{why}: installing Debian's {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        _run(["apt-get", "update", "-qq"], env=env, timeout_s=600)
        _apt_updated = True
    _run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        timeout_s=1200,
    )


def program(name: str, *, package: str, why: str) -> str:
    """The path of ``name``, installing Debian's ``package`` first when it is not on PATH."""
    found = shutil.which(name)
    if found is None:
        install_debian_packages([package], why=f"{why} needs {name}")
        found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is still not on PATH after installing Debian's {package}")
    return found


def answers(host: str, port: int, *, timeout_s: float = 2.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def postgres_url() -> URL:
    return make_url(os.environ.get("TOKENMETER_TEST_PG_URL", DEFAULT_PG_URL))


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """The admin URL of a PostgreSQL server with the test database, started here when needed."""
    url = postgres_url()
    host, port = url.host or "127.0.0.1", url.port or 5432
    cluster: Path | None = None
    if not answers(host, port):
        if host not in LOOPBACK:
            pytest.fail(f"no PostgreSQL answers at {host}:{port} (TOKENMETER_TEST_PG_URL)")
        bindir = _postgres_bin()  # installing Debian's package may start its own cluster
        if not answers(host, port):
            announce(f"nothing answers at {host}:{port}: starting a throwaway PostgreSQL")
            cluster = _start_cluster(bindir, host, port, user=url.username or "postgres")
    try:
        _ensure_database(url)
        yield url.render_as_string(hide_password=False)
    finally:
        if cluster is not None:
            _stop_cluster(cluster)


def _postgres_bin() -> Path:
    def newest() -> Path | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
        on_path = shutil.which("initdb")
        return Path(found[-1]).parent if found else Path(on_path).parent if on_path else None

    directory = newest()
    if directory is None:
        install_debian_packages(["postgresql"], why="the PostgreSQL tests need a server")
        directory = newest()
    if directory is None:
        pytest.fail("initdb not found after installing Debian's postgresql")
    return directory


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit())


def _start_cluster(bindir: Path, host: str, port: int, *, user: str) -> Path:
    """initdb and start a cluster in a fresh temporary directory, trusting loopback."""
    data = Path(tempfile.mkdtemp(prefix="tokenmeter-test-pg-"))
    as_owner = _owner_prefix(data)
    announce(f"PostgreSQL cluster in {data} on {host}:{port} ({bindir.parent.name})")
    _run(
        [
            *as_owner,
            str(bindir / "initdb"),
            "-D",
            str(data / "db"),
            "-U",
            user,
            "--auth=trust",
            "--no-sync",
        ]
    )
    options = f"-p {port} -k {data} -c listen_addresses={host} -c fsync=off"
    pg_ctl = [*as_owner, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log")]
    _run([*pg_ctl, "-o", options, "-w", "-t", str(int(START_TIMEOUT_S)), "start"])
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(host, port):
        if time.monotonic() > deadline:
            pytest.fail(f"the throwaway PostgreSQL did not answer; see {data / 'log'}")
        time.sleep(0.1)
    return data


def _owner_prefix(data: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user."""
    if os.geteuid() != 0:
        return []
    owner = "postgres"
    try:
        shutil.chown(data, user=owner)
    except LookupError:
        pytest.fail("running as root without a 'postgres' user to own the test cluster")
    return ["runuser", "-u", owner, "--"]


def _stop_cluster(data: Path) -> None:
    bindir = _postgres_bin()
    owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*owner, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    shutil.rmtree(data, ignore_errors=True)
    announce(f"stopped and removed the throwaway PostgreSQL cluster in {data}")


def _ensure_database(url: URL) -> None:
    import psycopg

    database = url.database or "postgres"
    conninfo = (
        f"host={url.host or '127.0.0.1'} port={url.port or 5432} "
        f"user={url.username or 'postgres'} dbname=postgres"
    )
    if url.password:
        conninfo += f" password={url.password}"
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if exists.fetchone() is None:
            announce(f"creating the test database {database!r}")
            conn.execute(f'CREATE DATABASE "{database}"')


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 120) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout_s)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


@contextlib.contextmanager
def redis() -> Iterator[str]:
    """The URL of a Redis server, started here when nothing answers at the test URL."""
    url = os.environ.get("TOKENMETER_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if answers(host, port):
        yield url
        return
    if host not in LOOPBACK:
        pytest.fail(f"no Redis answers at {host}:{port} (TOKENMETER_TEST_REDIS_URL)")
    binary = program("redis-server", package="redis-server", why="the shared rate-limit tests")
    if answers(host, port):  # installing Debian's package may start its own server
        yield url
        return
    announce(f"nothing answers at {host}:{port}: starting a throwaway Redis")
    with redis_server(host, port, binary=binary):
        yield url


@contextlib.contextmanager
def redis_server(host: str, port: int, *, binary: str | None = None) -> Iterator[str]:
    """A ``redis-server`` of this test's own on ``host:port``, in memory only; its URL."""
    binary = binary or program("redis-server", package="redis-server", why="a Redis test")
    proc = subprocess.Popen(
        [binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(host, port, timeout_s=0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer on {host}:{port}")
            time.sleep(0.05)
        yield f"redis://{host}:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def libreoffice(*, why: str) -> str:
    """The headless LibreOffice binary (``soffice``), from Debian's ``libreoffice-calc``."""
    return program("soffice", package="libreoffice-calc", why=why)
