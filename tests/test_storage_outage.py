"""Stopping Table Storage under load: requests keep flowing (no 5xx), limits go per instance, and when storage is
back the instances share state again by themselves.

Two gateway hosts share an Azurite of this test's own, which is stopped
under load and restarted on the same port with its data. Real time passes
here (the outage has to be noticed and outlived), so it is marked slow.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from shared.config import load_settings
from shared.errors import StoreUnavailable
from shared.gateway import Gateway
from shared.stores.factory import build_stores
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.servers import GatewayServer, settings_for

pytestmark = [pytest.mark.azurite, pytest.mark.slow]

ADMIN_KEY = "outage-test-admin-key"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
WINDOW = 5  # seconds: an outage across a window boundary forces every instance to need a new lease


async def sleep_until_into_window(offset: float) -> None:
    await asyncio.sleep((offset - time.time() % WINDOW) % WINDOW)


async def test_table_stores_report_an_unreachable_service_as_store_unavailable(
    azurite_factory: Callable[[], Azurite],
) -> None:
    storage = azurite_factory()
    storage.stop()
    env = {
        "GATEWAY_BACKENDS": '[{"name": "b", "endpoint": "http://127.0.0.1:9", "deployments": ["d"]}]',
        "GATEWAY_STORAGE": storage.connection_string,
    }
    stores = build_stores(load_settings(env))
    try:
        for attempt in (
            stores.subscriptions.find_by_key_hash("0" * 64),
            stores.backends.load_all(),
            stores.counters.update("sub-1", "rate", lambda s: {"tokens": 1}),
        ):
            with pytest.raises(StoreUnavailable):
                await attempt
        assert stores.stats()["unavailable"] == 3
    finally:
        await stores.close()


async def stats(session: aiohttp.ClientSession, server: GatewayServer) -> dict[str, Any]:
    async with session.get(f"{server.url}/gateway/admin/stats", headers={"x-admin-key": ADMIN_KEY}) as response:
        return await response.json()  # type: ignore[no-any-return]


async def test_requests_keep_flowing_while_storage_is_down_and_sharing_resumes_after(
    azurite_factory: Callable[[], Azurite], gateway_server: Callable[..., GatewayServer]
) -> None:
    storage = azurite_factory()
    with SimulatorThread(SimulatorConfig(name="sim", deployments=("chat",), api_key="sim-key")) as sim:
        settings = settings_for(
            [{"name": "sim", "endpoint": sim.url, "deployments": ["chat"]}],
            GATEWAY_STORAGE=storage.connection_string,
            GATEWAY_TABLE_PREFIX=unique_prefix(),
            GATEWAY_ADMIN_KEY=ADMIN_KEY,
            GATEWAY_RATE_WINDOW_SECONDS=str(WINDOW),
        )
        servers = [gateway_server(lambda: Gateway(settings)) for _ in range(2)]
        statuses: Counter[int] = Counter()
        during_outage: Counter[int] = Counter()
        stop = asyncio.Event()
        outage = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{servers[0].url}/gateway/admin/subscriptions",
                json={"name": "load", "tokens_per_minute": 10_000_000, "requests_per_minute": 1_000_000},
                headers={"x-admin-key": ADMIN_KEY},
            ) as response:
                key = (await response.json())["primary_key"]

            async def load(server: GatewayServer) -> None:
                url = f"{server.url}/openai/deployments/chat/chat/completions?api-version=2024-10-21"
                while not stop.is_set():
                    async with session.post(url, json=BODY, headers={"api-key": key}) as answer:
                        await answer.read()
                        statuses[answer.status] += 1
                        if outage.is_set():
                            during_outage[answer.status] += 1
                    await asyncio.sleep(0.01)

            workers = [asyncio.create_task(load(s)) for s in servers for _ in range(2)]
            await asyncio.sleep(1.0)
            await sleep_until_into_window(WINDOW - 1.5)
            storage.stop()
            outage.set()
            await asyncio.sleep(3.0)  # into the next window: every instance needed a lease while storage was down
            down = [await stats(session, s) for s in servers]
            outage.clear()
            storage.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                up = [await stats(session, s) for s in servers]
                if all(u["limits"]["shared"] and u["breakers"]["shared"] for u in up):
                    break
            leases_then = [u["limits"]["leases"] for u in up]
            await asyncio.sleep(WINDOW + 0.5)  # a new rate window needs new leases from the shared record
            after = [await stats(session, s) for s in servers]
            stop.set()
            await asyncio.gather(*workers)

    assert set(statuses) == {200}, statuses
    assert sum(during_outage.values()) > 20, during_outage  # requests kept flowing through the outage
    for seen in down:
        assert seen["limits"]["shared"] is False
        assert seen["limits"]["store_failures"] >= 1
    for seen_up, seen_after, before in zip(up, after, leases_then, strict=True):
        assert seen_up["limits"]["shared"] is True
        assert seen_up["breakers"]["shared"] is True
        assert seen_after["limits"]["leases"] > before  # shared leases again, from the restarted storage
