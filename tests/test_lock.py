"""The lock files: every dependency pinned with hashes, the two locks agreeing, and the
environment under test being the locked one (so the price map is the locked litellm's)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from metering.price_map import price_map_version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {"run": ROOT / "requirements.lock", "test": ROOT / "requirements-test.lock"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\$", re.M)


def pins(path: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (version, marker) of each ``name==version`` line of a lock."""
    text = path.read_text()
    return {canonicalize_name(n): (v, m) for n, v, m in _PIN.findall(text)}


def declared(*extras: str) -> set[str]:
    names = [*PYPROJECT["dependencies"]]
    for extra in extras:
        names += PYPROJECT["optional-dependencies"][extra]
    reqs = [Requirement(n) for n in names]
    return {canonicalize_name(r.name) for r in reqs if r.name != PYPROJECT["name"]}


@pytest.mark.parametrize(("lock", "extras"), [("run", ("otel",)), ("test", ("otel", "test"))])
def test_lock_pins_every_declared_dependency(lock: str, extras: tuple[str, ...]) -> None:
    assert declared(*extras) - set(pins(LOCKS[lock])) == set()


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_has_a_hash(lock: str) -> None:
    blocks = re.split(r"\n(?=\S)", LOCKS[lock].read_text())
    pinned = [b for b in blocks if "==" in b.split("\n", 1)[0] and not b.startswith("#")]
    assert pinned and all("--hash=sha256:" in b for b in pinned)


def test_the_locks_agree_on_shared_packages() -> None:
    run, test = pins(LOCKS["run"]), pins(LOCKS["test"])
    assert {n: run[n][0] for n in run} == {n: test[n][0] for n in run}


def test_installed_versions_are_the_locked_ones() -> None:
    """The suite runs against what the lock says (the README installs from it)."""
    wrong = {}
    for name, (locked, marker) in pins(LOCKS["test"]).items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "missing"
        if installed != locked:
            wrong[name] = f"{installed} installed, {locked} locked"
    assert wrong == {}, "install the lock: pip install -r requirements-test.lock"


def test_price_map_is_the_locked_litellm() -> None:
    assert price_map_version() == pins(LOCKS["run"])["litellm"][0]
