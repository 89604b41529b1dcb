"""The 80/20 split: the smallest set of use cases that carries a given share of a volume.

Taking the largest items first is optimal for the size of the set: any set of k items carries at
most as much as the k largest, so if the k largest fall short, every set of k does. Comparisons are
made on integers (tokens, micro-dollars), so the 80% threshold is exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

PARETO_SHARE = Fraction(4, 5)  # "80% of volume comes from 20% of use cases"


@dataclass(frozen=True, slots=True)
class ParetoSet:
    """The smallest set of items whose volume reaches ``share`` of the total.

    ``members`` are in descending order of volume (ties by name); ``population`` counts every
    item, including those with no volume.
    """

    members: tuple[str, ...]
    carried: int
    total: int
    population: int
    share: Fraction = PARETO_SHARE

    @property
    def member_share(self) -> float:
        """Share of the items that are in the set (0 when there are none)."""
        return len(self.members) / self.population if self.population else 0.0

    @property
    def carried_share(self) -> float:
        """Share of the total volume the set carries (0 when the total is 0)."""
        return self.carried / self.total if self.total else 0.0


def ranked(volumes: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Largest first, ties broken by name so that the order is reproducible."""
    return sorted(volumes, key=lambda item: (-item[1], item[0]))


def smallest_set(
    volumes: Iterable[tuple[str, int]], *, share: Fraction = PARETO_SHARE
) -> ParetoSet:
    """The fewest items that together carry at least ``share`` of the total volume.

    Volumes are non-negative integers. With a total of 0 the set is empty.
    """
    items = ranked(volumes)
    total = sum(v for _, v in items)
    members: list[str] = []
    carried = 0
    for name, volume in items:
        if total == 0 or carried * share.denominator >= total * share.numerator:
            break
        members.append(name)
        carried += volume
    return ParetoSet(tuple(members), carried, total, len(items), share)


def headline(pareto: ParetoSet, *, items: str, volume: str) -> str:
    """ "20% of use cases (3 of 15) carry 84% of tokens".

    The item share is rounded to the nearest percent; the volume share is rounded down, so the
    headline never claims more than the set carries.
    """
    if pareto.total == 0:
        return f"no {volume} recorded"
    k, n = len(pareto.members), pareto.population
    item_pct = (200 * k + n) // (2 * n)
    volume_pct = 100 * pareto.carried // pareto.total
    return f"{item_pct}% of {items} ({k} of {n}) carry {volume_pct}% of {volume}"
