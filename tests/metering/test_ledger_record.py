"""Ledger.record never loses an event to a failure of its own pricing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from metering.events import UsageEvent
from metering.ledger import Ledger
from tests.metering.factories import make_event


class CollectingSink:
    journal_failed = False
    backlog_events = backlog_bytes = 0
    db_ok = True
    stalled = None

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def submit(self, event: UsageEvent) -> bool:
        self.events.append(event)
        return True


class BrokenPrices:
    """A pricing rule that raises: the fault injected."""

    def price(self, *args: Any, **kwargs: Any) -> int:
        raise ZeroDivisionError("a pricing bug")


def test_a_pricing_failure_records_the_event_with_an_unknown_cost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = CollectingSink()
    ledger = Ledger(writer=sink, prices=BrokenPrices(), reject_unjournaled=True)  # type: ignore[arg-type]
    event = make_event()
    assert event.usage.total_tokens > 0
    with caplog.at_level(logging.ERROR, logger="metering.ledger"):
        assert ledger.record(event)
    assert sink.events == [event] and event.cost_micro_usd is None
    assert "pricing failed" in caplog.text
