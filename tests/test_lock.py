"""The lock files: every dependency pinned with hashes, the two locks agreeing, and the
environment under test being the locked one (so the price map is the locked litellm's)."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from metering.price_map import price_map_version


def _lock_extras():  # .ci/lock_extras.py, which .ci/relock runs
    spec = importlib.util.spec_from_file_location("lock_extras", ROOT / ".ci" / "lock_extras.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {"run": ROOT / "requirements.lock", "test": ROOT / "requirements-test.lock"}
_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\$", re.M
)


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


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_pins_carry_the_extras_their_dependents_ask_for(lock: str) -> None:
    """pip before 23.3 (a new machine's) refuses a hash-checked lock that pins httpx==... when
    litellm asks for httpx[http2]: the pin must name the extras."""
    extras = _lock_extras()
    text = LOCKS[lock].read_text()
    asked = extras.asked_extras(set(pins(LOCKS[lock])))
    assert asked.get("httpx", set()) >= {"http2"}  # what litellm asks for, so the check is live
    assert extras.with_extras(text, asked) == text, "run: python .ci/lock_extras.py LOCK..."


def test_extras_are_written_into_pins_once_and_merged() -> None:
    extras = _lock_extras()
    text = "a==1 \\\n    --hash=sha256:x\nb[y]==2 \\\nc==3 ; sys_platform == 'linux' \\\n"
    asked = {"a": {"p", "q"}, "b": {"x"}}
    out = extras.with_extras(text, asked)
    assert out.splitlines()[0] == "a[p,q]==1 \\"
    assert out.splitlines()[2] == "b[x,y]==2 \\"
    assert out.splitlines()[3] == "c==3 ; sys_platform == 'linux' \\"
    assert extras.with_extras(out, asked) == out
