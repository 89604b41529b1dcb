"""Fixtures of the gateway's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy.gateway.relays.upstream import Upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A started upstream client, stopped after the test."""
    client = Upstream()
    await client.start()
    yield client
    await client.stop()
