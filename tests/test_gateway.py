"""The composition root: the gateway owns its background work and drains it on close."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from shared import pipeline
from shared.admin.subscriptions import SubscriptionAdmin
from shared.gateway import Gateway
from shared.models import GatewayRequest
from shared.stores.embedded import EmbeddedLedgerStore
from simulator import SimulatorConfig, SimulatorThread
from simulator.config import Latency
from tests.fixtures.observed import backend
from tests.fixtures.servers import settings_for

KEY = "shutdown-key-0123456789"


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimulatorThread]:
    # 20 tokens a second: a 200-token answer streams for about ten seconds.
    config = SimulatorConfig(
        name="slow", deployments=("gpt-4o-mini",), api_key="sim-key", latency=Latency(tokens_per_second=20)
    )
    with SimulatorThread(config) as running:
        yield running


def _stream_request() -> GatewayRequest:
    body = {"messages": [{"role": "user", "content": "Tell me a long story"}], "max_tokens": 200, "stream": True}
    return GatewayRequest(
        method="POST",
        path="/openai/deployments/gpt-4o-mini/chat/completions",
        headers={"api-key": KEY, "content-type": "application/json"},
        query={"api-version": "2024-10-21"},
        body=json.dumps(body).encode(),
        request_id="req-shutdown",
    )


async def test_a_stream_cut_by_shutdown_still_reaches_the_ledger(slow_sim: SimulatorThread) -> None:
    gateway = Gateway(settings_for([backend("slow", slow_sim)], GATEWAY_LEDGER_FLUSH_SECONDS="3600"))
    ledger = gateway.ledger.store
    assert isinstance(ledger, EmbeddedLedgerStore)
    await SubscriptionAdmin(gateway.stores.subscriptions).create({"name": "shutdown"}, primary_key=KEY)

    response = await pipeline.handle(gateway, _stream_request())
    assert response.status == 200
    assert response.stream is not None
    received: list[bytes] = []
    streaming = asyncio.Event()

    async def read() -> None:
        assert response.stream is not None
        async for chunk in response.stream:  # the server's task, still sending when the worker is told to stop
            received.append(chunk)
            if sum(c.count(b'"content":') for c in received) >= 4:
                streaming.set()

    reader = asyncio.create_task(read())
    await asyncio.wait_for(streaming.wait(), timeout=10)
    await asyncio.wait_for(gateway.close(), timeout=10)  # long before the backend would have finished
    await asyncio.wait_for(reader, timeout=5)  # the caller's stream ended (with an error event), not hung

    rows = await ledger.rows(0, 4_000_000_000)
    assert sum(sum(r.counts.requests.values()) for r in rows) == 1
    completion = sum(r.counts.completion_tokens for r in rows)
    assert 3 <= completion < 200  # charged for what was sent, not the whole answer and not nothing
    assert b"error" in received[-1]
