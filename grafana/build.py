"""Writes the Grafana dashboards in grafana/dashboards/ from the modules of this package.

    python -m grafana.build          # rewrite the JSON files
    python -m grafana.build --check  # exit 1 if a committed file differs from the generated one

Edit the dashboards in Python, not in Grafana: the JSON is generated and committed along with the
code, and tests/grafana checks that both agree and that every query runs (PromQL against a real
Prometheus, SQL against PostgreSQL).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana.boards import backends
from grafana.boards import spend_by_use_case as spend
from grafana.boards import tco_live as tco
from grafana.boards import users_agents_sessions as ledger
from grafana.panels import Json

OUT = Path(__file__).parent / "dashboards"
DASHBOARDS: dict[str, Callable[[], Json]] = {
    "spend-by-use-case.json": spend.build,
    "tco-live.json": tco.build,
    "backends.json": backends.build,
    "users-agents-sessions.json": ledger.build,
}


def render() -> dict[str, str]:
    """Each dashboard file's name and its JSON text."""
    return {name: json.dumps(make(), indent=2) + "\n" for name, make in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        stale = [n for n, t in rendered.items() if _read(OUT / n) != t]
        for name in stale:
            print(f"{OUT / name} is stale: run python -m grafana.build", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for name, body in rendered.items():
        (OUT / name).write_text(body)
    return 0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
