"""Write into the lock files the extras their packages ask of each other: ``httpx[http2]==0.28.1``.

uv writes every pin as ``name==version``. pip before 23.3, the one a new machine's Python brings
(23.2.1 here), then refuses the lock in --require-hashes mode as soon as a locked package asks for
``name[extra]`` (litellm asks for ``httpx[http2]``): "all requirements must have their versions
pinned with ==". The requirements are read from the installed packages' metadata, so run it where
the test lock is installed (`.ci/relock` does); `--check` only says which pins lack their extras.

    python .ci/lock_extras.py [--check] requirements-test.lock requirements.lock
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?==", re.M)


def asked_extras(locked: set[str]) -> dict[str, set[str]]:
    """name -> the extras locked packages ask of it, following the extras asked in turn
    (``a[x]`` may ask for ``b[y]``), with the markers evaluated here."""
    requires = {
        canonicalize_name(d.metadata["Name"]): [Requirement(r) for r in d.requires or []]
        for d in distributions()
    }
    asked: dict[str, set[str]] = {}
    changed = True
    while changed:
        changed = False
        for name, reqs in requires.items():
            if name not in locked:  # the project itself is installed, never locked
                continue
            active = {"", *asked.get(name, ())}
            for req in reqs:
                if not req.extras:
                    continue
                if req.marker is not None and not any(
                    req.marker.evaluate({"extra": e}) for e in active
                ):
                    continue
                target = asked.setdefault(canonicalize_name(req.name), set())
                if not req.extras <= target:
                    target |= req.extras
                    changed = True
    return asked


def with_extras(text: str, asked: dict[str, set[str]]) -> str:
    def pin(match: re.Match[str]) -> str:
        name, extras = match.group(1), set(filter(None, (match.group(2) or "").split(",")))
        extras |= asked.get(canonicalize_name(name), set())
        return f"{name}[{','.join(sorted(extras))}]==" if extras else f"{name}=="

    return PIN.sub(pin, text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"]
    texts = {p: p.read_text() for p in paths}
    locked = {canonicalize_name(m.group(1)) for t in texts.values() for m in PIN.finditer(t)}
    asked = asked_extras(locked)
    stale = {p: new for p, t in texts.items() if (new := with_extras(t, asked)) != t}
    for path, text in stale.items():
        if check:
            print(f"{path}: pins without the extras their dependents ask for", file=sys.stderr)
        else:
            path.write_text(text)
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
