"""The relayed stream keeps its own read timeout: a stream that stops is cut, a slow steady one is not."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from shared import pipeline
from shared.admin.subscriptions import SubscriptionAdmin
from shared.gateway import Gateway
from shared.models import GatewayRequest
from simulator import SimulatorConfig, SimulatorThread
from simulator.config import Latency
from tests.fixtures.observed import backend
from tests.fixtures.servers import settings_for

KEY = "relay-key-0123456789"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    config = SimulatorConfig(
        name="paced", deployments=("gpt-4o-mini",), api_key="sim-key", latency=Latency(tokens_per_second=20)
    )
    with SimulatorThread(config) as running:
        yield running


def _request(max_tokens: int) -> GatewayRequest:
    body = {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": max_tokens, "stream": True}
    return GatewayRequest(
        method="POST",
        path="/openai/deployments/gpt-4o-mini/chat/completions",
        headers={"api-key": KEY, "content-type": "application/json"},
        query={"api-version": "2024-10-21"},
        body=json.dumps(body).encode(),
        request_id="req-relay",
    )


async def _stream(sim: SimulatorThread, read_timeout: float, max_tokens: int) -> list[bytes]:
    gateway = Gateway(settings_for([{**backend("paced", sim), "timeouts": {"read": read_timeout}}]))
    await SubscriptionAdmin(gateway.stores.subscriptions).create({"name": "relay"}, primary_key=KEY)
    try:
        response = await pipeline.handle(gateway, _request(max_tokens))
        assert response.status == 200
        assert response.stream is not None
        return [chunk async for chunk in response.stream]
    finally:
        await gateway.close()


async def test_a_slow_steady_stream_is_never_cut(sim: SimulatorThread) -> None:
    chunks = await _stream(sim, read_timeout=0.3, max_tokens=12)  # a token every 50 ms, for about 0.6 s
    assert b"".join(chunks).rstrip().endswith(b"data: [DONE]")


async def test_a_stream_that_stops_is_cut_after_the_read_timeout_with_an_error_event(sim: SimulatorThread) -> None:
    sim.set_latency(tokens_per_second=2)  # half a second between tokens: longer than the read timeout
    try:
        chunks = await _stream(sim, read_timeout=0.2, max_tokens=20)
    finally:
        sim.set_latency(tokens_per_second=20)
    body = b"".join(chunks)
    assert not body.rstrip().endswith(b"data: [DONE]")
    error = json.loads(chunks[-1].removeprefix(b"data: "))["error"]
    assert error["message"] == "The backend failed while streaming the response."
    assert body.count(b'"content":') < 5  # cut within a token or two, not at the end
