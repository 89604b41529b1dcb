"""Load hosted-model prices from litellm's pinned price file, without importing litellm.

Importing litellm takes 2-3 s and ~180 MB; the gateway must start in under 1.5 s. The price
file ships inside the litellm package, so it is found with ``importlib.util.find_spec``, which
locates the package without executing it, and parsed with orjson.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import orjson

from cost.prices import ModelPrice, PriceTable

PRICE_FILE_NAME = "model_prices_and_context_window_backup.json"  # litellm's offline copy


def load_price_map(
    path: Path | None = None, *, overrides: Mapping[str, ModelPrice] | None = None
) -> PriceTable:
    """Read the price file into a ``PriceTable``; ``overrides`` win over its prices.

    Without ``path``, the file pinned by the installed litellm version is used and
    ``PriceTable.source`` is ``"litellm <version>"``; with ``path`` (an operator's own file in
    litellm's format), the source is the path and the file's modification date.
    Raises ``FileNotFoundError`` when there is no file and ``ValueError`` when it is malformed.
    """
    if path is None:
        # The version is the pin; the packaged file's mtime is only the install time.
        path, source = packaged_price_file(), price_map_version()
    else:
        modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).date()
        source = f"{path} (modified {modified.isoformat()})"
    raw = orjson.loads(path.read_bytes())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of model entries")
    return PriceTable.from_litellm(raw, source, overrides=overrides)


def packaged_price_file() -> Path:
    """Path of the price file inside the installed litellm package."""
    spec = importlib.util.find_spec("litellm")
    for directory in (spec and spec.submodule_search_locations) or ():
        candidate = Path(directory) / PRICE_FILE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{PRICE_FILE_NAME} not found: is litellm installed?")


def _litellm_version() -> str:
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def price_map_version() -> str:
    """Which price map the packaged prices are: ``litellm <version>`` (the one place to ask)."""
    return f"litellm {_litellm_version()}"
