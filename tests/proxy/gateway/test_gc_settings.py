"""The gateway's start-up leaves the cyclic GC set for a server: its start-up heap frozen and
the thresholds that keep young collections rare with thousands of requests suspended."""

from __future__ import annotations

import gc

from proxy.app import GC_THRESHOLDS
from tests.support import Gateway


def test_a_started_gateway_runs_with_the_server_thresholds(gateway: Gateway) -> None:
    assert gateway is not None  # started: its lifespan ran
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
