"""The gateway's own limits: a full slot pool is shed or queued by the gateway, never blamed on a backend."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator

import pytest

from shared import pipeline
from shared.admin.subscriptions import SubscriptionAdmin
from shared.breaker import Status
from shared.capacity import Slots
from shared.gateway import Gateway
from shared.models import GatewayRequest, GatewayResponse
from simulator import SimulatorConfig, SimulatorThread
from simulator.config import Latency
from tests.fixtures.observed import backend
from tests.fixtures.servers import settings_for

KEY = "capacity-key-0123456789"
# Every counted failure would open the breaker at once: a pool wait blamed on the backend could not hide.
STRICT_BREAKER = json.dumps({"failures": 1, "interval_seconds": 60, "trip_seconds": 60})


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimulatorThread]:
    # 20 tokens a second: a 10-token answer streams for about half a second.
    config = SimulatorConfig(
        name="slow", deployments=("gpt-4o-mini",), api_key="sim-key", latency=Latency(tokens_per_second=20)
    )
    with SimulatorThread(config) as running:
        yield running


def _request(n: int, *, stream: bool = True, max_tokens: int = 10) -> GatewayRequest:
    body = {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": max_tokens, "stream": stream}
    return GatewayRequest(
        method="POST",
        path="/openai/deployments/gpt-4o-mini/chat/completions",
        headers={"api-key": KEY, "content-type": "application/json"},
        query={"api-version": "2024-10-21"},
        body=json.dumps(body).encode(),
        request_id=f"req-{n}",
    )


async def _gateway(sim: SimulatorThread, **env: str) -> Gateway:
    settings = settings_for(
        [{**backend("slow", sim), "timeouts": {"connect": 0.2}}],
        GATEWAY_BREAKER=STRICT_BREAKER,
        GATEWAY_METRICS_ENDPOINT="true",
        **env,
    )
    gateway = Gateway(settings)
    await SubscriptionAdmin(gateway.stores.subscriptions).create({"name": "capacity"}, primary_key=KEY)
    return gateway


async def _drain(response: GatewayResponse) -> bytes:
    if response.stream is None:
        return response.body
    return b"".join([chunk async for chunk in response.stream])


async def _call(gateway: Gateway, n: int) -> tuple[GatewayResponse, bytes]:
    response = await pipeline.handle(gateway, _request(n))
    return response, await _drain(response)


def _breaker_closed(gateway: Gateway) -> bool:
    state = gateway.breakers.state(gateway.breakers.key("slow", "gpt-4o-mini"))
    return state.status is Status.CLOSED and not state.failures


async def test_a_full_pool_is_shed_by_the_gateway_and_the_breaker_stays_closed(slow_sim: SimulatorThread) -> None:
    slow_sim.clear_requests()
    gateway = await _gateway(slow_sim, GATEWAY_MAX_CONNECTIONS_PER_BACKEND="2", GATEWAY_POOL_WAIT_SECONDS="0.1")
    try:
        results = await asyncio.gather(*(_call(gateway, n) for n in range(6)))
        served = [body for response, body in results if response.status == 200]
        shed = [(response, body) for response, body in results if response.status != 200]
        assert len(served) == 2
        assert all(body.rstrip().endswith(b"data: [DONE]") for body in served)
        assert len(shed) == 4
        for response, body in shed:
            assert response.status == 503
            assert json.loads(body)["error"]["code"] == "gateway_overloaded"
            assert int(response.headers["Retry-After"]) >= 1
        assert len(slow_sim.requests()) == 2  # the shed calls never reached the backend
        assert _breaker_closed(gateway)
        assert gateway.router.throttled_until("slow", "gpt-4o-mini") == 0.0
        text = gateway.telemetry.prometheus()
        assert re.search(
            r'gateway_requests_total\{gateway_outcome="overloaded",http_response_status_code="503".*\} 4', text
        )

        # With the streams done, the next call is served: nothing was tripped or throttled meanwhile.
        response, body = await _call(gateway, 7)
        assert response.status == 200
        assert body.rstrip().endswith(b"data: [DONE]")
        assert gateway.capacity.stats()["slow/stream"] == {"limit": 2, "in_use": 0, "waiting": 0}
    finally:
        await gateway.close()


async def test_callers_queue_for_a_slot_longer_than_the_connect_timeout_and_are_all_served(
    slow_sim: SimulatorThread,
) -> None:
    # Before: a wait for aiohttp's pooled connection ran inside the 0.2 s connect timeout, failed as a backend
    # timeout and opened the breaker. Now the wait is the gateway's own and every caller is served in turn.
    gateway = await _gateway(slow_sim, GATEWAY_MAX_CONNECTIONS_PER_BACKEND="2", GATEWAY_POOL_WAIT_SECONDS="10")
    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(_call(gateway, n) for n in range(6)))
        assert [response.status for response, _ in results] == [200] * 6
        assert all(body.rstrip().endswith(b"data: [DONE]") for _, body in results)
        assert time.perf_counter() - started > 0.6  # three rounds of two: the later ones really waited
        assert _breaker_closed(gateway)
    finally:
        await gateway.close()


async def test_short_calls_are_not_held_behind_streams(slow_sim: SimulatorThread) -> None:
    gateway = await _gateway(slow_sim, GATEWAY_MAX_CONNECTIONS_PER_BACKEND="2", GATEWAY_POOL_WAIT_SECONDS="10")
    try:
        long = [asyncio.create_task(_call_long(gateway, n)) for n in range(3)]  # two streaming, one queued
        pool = gateway.capacity.pool("slow", stream=True)
        for _ in range(200):
            if pool.in_use == 2 and pool.waiting == 1:
                break
            await asyncio.sleep(0.01)
        assert (pool.in_use, pool.waiting) == (2, 1)

        unary = await asyncio.wait_for(pipeline.handle(gateway, _request(9, stream=False, max_tokens=1)), 2)
        assert unary.status == 200
        assert json.loads(unary.body)["usage"]["completion_tokens"] == 1
        assert (pool.in_use, pool.waiting) == (2, 1)  # answered while every stream slot was taken and one waited
        for task in long:
            task.cancel()
        await asyncio.gather(*long, return_exceptions=True)
    finally:
        await gateway.close()
    assert gateway.capacity.stats()["slow/stream"]["in_use"] == 0


async def _call_long(gateway: Gateway, n: int) -> None:
    response = await pipeline.handle(gateway, _request(n, max_tokens=200))
    await _drain(response)


async def test_a_caller_leaving_mid_stream_frees_its_slot_and_blames_no_one(slow_sim: SimulatorThread) -> None:
    gateway = await _gateway(slow_sim, GATEWAY_MAX_CONNECTIONS_PER_BACKEND="1")
    try:
        response = await pipeline.handle(gateway, _request(1, max_tokens=200))
        assert response.stream is not None
        async for _chunk in response.stream:
            break  # the caller goes away after the first event
        await response.stream.aclose()  # type: ignore[attr-defined]
        for _ in range(100):
            if gateway.capacity.pool("slow", stream=True).in_use == 0:
                break
            await asyncio.sleep(0.01)
        assert gateway.capacity.pool("slow", stream=True).in_use == 0
        assert _breaker_closed(gateway)
        response, _ = await _call(gateway, 2)  # the one slot is free again
        assert response.status == 200
    finally:
        await gateway.close()


async def test_slots_are_handed_out_in_order_and_a_waiter_that_gives_up_leaves_no_trace() -> None:
    slots = Slots(1)
    assert await slots.acquire(0)
    assert not await slots.acquire(0)  # full, and told at once
    assert not await slots.acquire(0.01)  # timed out
    assert slots.waiting == 0

    order: list[int] = []

    async def take(n: int) -> None:
        assert await slots.acquire(5)
        order.append(n)

    first, second = asyncio.create_task(take(1)), asyncio.create_task(take(2))
    cancelled = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    assert slots.waiting == 3
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert slots.waiting == 2
    slots.release()
    await first
    slots.release()
    await second
    assert order == [1, 2]
    slots.release()
    assert (slots.in_use, slots.waiting) == (0, 0)
    slots.release()  # one release too many never makes room beyond the limit
    assert slots.in_use == 0
    assert await slots.acquire(0)
    assert not await slots.acquire(0)


async def test_a_timeout_that_fires_while_the_gateways_loop_is_stalled_is_not_the_backends(
    slow_sim: SimulatorThread,
) -> None:
    slow_sim.set_faults(slow_first_byte_ms=600, count=1)  # only the first call is slow
    settings_env = {"GATEWAY_MAX_CONNECTIONS_PER_BACKEND": "4"}
    gateway = Gateway(
        settings_for(
            [{**backend("slow", slow_sim), "timeouts": {"first_byte": 0.3}}],
            GATEWAY_BREAKER=STRICT_BREAKER,
            **settings_env,
        )
    )
    await SubscriptionAdmin(gateway.stores.subscriptions).create({"name": "capacity"}, primary_key=KEY)
    try:
        call = asyncio.create_task(pipeline.handle(gateway, _request(1, stream=False, max_tokens=1)))
        await asyncio.sleep(0.1)  # the attempt is waiting for the backend, its timeout armed
        time.sleep(1.5)  # noqa: ASYNC251 - the point: a burst of work holds the loop past the timeout
        response = await call
        assert response.status == 200  # tried once more once the loop caught up, and served
        assert _breaker_closed(gateway)

        # Stalled twice, the call is shed by the gateway itself, and still blames no one.
        slow_sim.set_faults(slow_first_byte_ms=600)
        call = asyncio.create_task(pipeline.handle(gateway, _request(2, stream=False, max_tokens=1)))
        await asyncio.sleep(0.1)
        time.sleep(1.5)  # noqa: ASYNC251 - as above
        await asyncio.sleep(0.1)  # the second try is under way
        time.sleep(1.5)  # noqa: ASYNC251 - and stalls too
        response = await call
        assert response.status == 503
        assert json.loads(response.body)["error"]["code"] == "gateway_overloaded"
        assert _breaker_closed(gateway)

        # The same timeout with the loop running freely is the backend's: it counts.
        response = await pipeline.handle(gateway, _request(3, stream=False, max_tokens=1))
        assert response.status == 503
        assert json.loads(response.body)["error"]["code"] == "no_backend_available"
        assert not _breaker_closed(gateway)
    finally:
        slow_sim.set_faults(None)
        await gateway.close()
