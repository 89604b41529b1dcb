from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

import orjson
import pytest

from cost.prices import ModelPrice, PriceTable
from cost.pricing import price_usage
from cost.usage import TokenUsage
from metering.price_map import load_price_map, packaged_price_file


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_price_map()


def per_million(usd: str) -> Decimal:
    return Decimal(usd) / 1_000_000


# tco.md §6.1 / §6.2, $/M: in, out, cache write 5 m, cache write 1 h, cache read (Mistral: none,
# so cached tokens cost plain input).
@pytest.mark.parametrize(
    ("model", "backend", "key", "prices"),
    [
        ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", ("3", "15", "3.75", "6", "0.30")),
        ("claude-haiku-4-5", "anthropic", "claude-haiku-4-5", ("1", "5", "1.25", "2", "0.10")),
        ("claude-opus-4-5", "anthropic", "claude-opus-4-5", ("5", "25", "6.25", "10", "0.50")),
        (
            "mistral-large-3",
            "azure_mistral",
            "azure_ai/mistral-large-3",
            ("0.50", "1.50") + ("0.50",) * 3,
        ),
        (
            "mistral-small-2503",
            "azure_mistral",
            "azure_ai/mistral-small-2503",
            ("0.10", "0.30") + ("0.10",) * 3,
        ),
    ],
)
def test_packaged_file_has_tco_prices(
    table: PriceTable, model: str, backend: str, key: str, prices: tuple[str, ...]
) -> None:
    price = table.lookup(model, backend)
    assert price is not None
    found = (
        price.key,
        price.input,
        price.output,
        price.cache_write_5m,
        price.cache_write_1h,
        price.cache_read,
    )
    assert found == (key, *map(per_million, prices))


def test_no_preset_names_a_key_gone_from_the_packaged_map(table: PriceTable) -> None:
    """azure_ai/mistral-large-2407 left litellm's map in 1.110: presets must not depend on it."""
    from cost.scenarios import SCENARIOS

    named = {key for s in SCENARIOS.values() for key in s.hosted_models}
    assert named and named - set(table.prices) == set()


def test_deprecation_date_is_read(table: PriceTable) -> None:
    price = table.prices["claude-sonnet-4-5"]
    assert price.deprecation_date == "2026-11-30"  # the map's own entry
    assert table.prices["claude-opus-4-5"].deprecation_date is None


def test_packaged_file_prices_a_request(table: PriceTable) -> None:
    usage = TokenUsage(input_tokens=1_825, cache_read_tokens=1_800, output_tokens=15)
    assert price_usage(usage, table.lookup("anthropic/claude-sonnet-4-5", "anthropic")) == 840


def test_source_names_litellm_version(table: PriceTable) -> None:
    assert table.source == f"litellm {version('litellm')}"


def test_operator_file_replaces_packaged_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(orjson.dumps({"my-model": {"mode": "chat", "input_cost_per_token": 1e-06}}))
    assert set(load_price_map(path).prices) == {"my-model"}


def test_operator_file_is_the_source(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(b"{}")
    assert load_price_map(path).source.startswith(f"{path} (modified ")


def test_file_that_is_not_an_object_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(b"[]")
    with pytest.raises(ValueError, match="JSON object"):
        load_price_map(path)


def test_overrides_are_passed_to_the_table() -> None:
    usd = per_million("1")
    mine = ModelPrice(
        key="mine", input=usd, output=usd, cache_read=usd, cache_write_5m=usd, cache_write_1h=usd
    )
    assert load_price_map(overrides={"claude-sonnet-4-5": mine}).overrides == {
        "claude-sonnet-4-5": mine
    }


def test_packaged_file_is_inside_litellm_package() -> None:
    assert packaged_price_file().parent.name == "litellm"


def test_loading_does_not_import_litellm() -> None:
    code = (
        "import sys; from metering.price_map import load_price_map; load_price_map(); "
        "sys.exit('litellm' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
