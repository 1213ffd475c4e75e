"""Storage that fails or freezes: every storage route answers 503 with Retry-After (never 500), and requests for
known keys are not slowed, because key lookups are revalidated in the background and storage calls time out.

Each test has an Azurite of its own to stop or freeze (SIGSTOP: connections are accepted and never answered,
like a storage account that hangs); it is always resumed (SIGCONT) before the test ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import pytest

from shared.gateway import Gateway
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.servers import GatewayServer, settings_for

pytestmark = [pytest.mark.azurite, pytest.mark.slow]

ADMIN = "storage-faults-admin-key"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
CHAT = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
STORAGE_ROUTES = [
    ("GET", "/gateway/admin/subscriptions", None),
    ("POST", "/gateway/admin/subscriptions", {"name": "during-outage"}),
    ("GET", "/gateway/admin/subscriptions/sub-x", None),
    ("PATCH", "/gateway/admin/subscriptions/sub-x", {"name": "y"}),
    ("DELETE", "/gateway/admin/subscriptions/sub-x", None),
    ("POST", "/gateway/admin/subscriptions/sub-x/regenerate", {"key": "primary"}),
    ("GET", "/gateway/admin/usage", None),
    ("GET", "/usage", None),
]


def _gateway(
    storage: Azurite, sim: SimulatorThread, gateway_server: Callable[..., GatewayServer], **env: str
) -> GatewayServer:
    settings = settings_for(
        [{"name": "sim", "endpoint": sim.url, "deployments": ["chat"]}],
        GATEWAY_STORAGE=storage.connection_string,
        GATEWAY_TABLE_PREFIX=unique_prefix(),
        GATEWAY_ADMIN_KEY=ADMIN,
        GATEWAY_STORAGE_TIMEOUT_SECONDS="1",
        **env,
    )
    return gateway_server(lambda: Gateway(settings))


async def _create_key(session: aiohttp.ClientSession, gw: GatewayServer) -> str:
    async with session.post(
        f"{gw.url}/gateway/admin/subscriptions", json={"name": "known"}, headers={"x-admin-key": ADMIN}
    ) as response:
        assert response.status == 201
        return str((await response.json())["primary_key"])


async def _assert_storage_routes_answer_503(session: aiohttp.ClientSession, gw: GatewayServer, key: str) -> None:
    for method, path, body in STORAGE_ROUTES:
        headers = {"x-admin-key": ADMIN, "api-key": key}
        started = time.monotonic()
        async with session.request(method, gw.url + path, json=body, headers=headers) as response:
            answer = await response.json()
            assert response.status == 503, (method, path, answer)
            assert response.headers["Retry-After"]
            assert answer["error"]["code"] == "storage_unavailable", (method, path, answer)
            assert set(answer["error"]) == {"message", "type", "code", "param"}
        assert time.monotonic() - started < 10  # a few storage timeouts at most, not the SDK's retries


async def test_storage_stopped_means_503_with_retry_after_on_every_storage_route(
    azurite_factory: Callable[[], Azurite], gateway_server: Callable[..., GatewayServer]
) -> None:
    storage = azurite_factory()
    with SimulatorThread(SimulatorConfig(name="sim", deployments=("chat",), api_key="sim-key")) as sim:
        gw = _gateway(storage, sim, gateway_server)
        async with aiohttp.ClientSession() as session:
            key = await _create_key(session, gw)
            async with session.post(gw.url + CHAT, json=BODY, headers={"api-key": key}) as response:
                assert response.status == 200  # the key is cached now
            storage.stop()
            await _assert_storage_routes_answer_503(session, gw, key)
            async with session.post(gw.url + CHAT, json=BODY, headers={"api-key": key}) as response:
                assert response.status == 200  # a known key keeps working
            async with session.post(gw.url + CHAT, json=BODY, headers={"api-key": "gw-never-seen"}) as response:
                assert response.status == 503
                assert response.headers["Retry-After"]
                assert (await response.json())["error"]["code"] == "auth_unavailable"


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _timed_requests(session: aiohttp.ClientSession, gw: GatewayServer, key: str, seconds: float) -> list[float]:
    """Four callers in a loop for `seconds`: the latency of each request, and no status but 200."""
    latencies: list[float] = []
    statuses: list[int] = []
    end = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < end:
            started = time.perf_counter()
            async with session.post(gw.url + CHAT, json=BODY, headers={"api-key": key}) as response:
                await response.read()
                statuses.append(response.status)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(4)))
    assert set(statuses) == {200}, statuses
    return latencies


async def test_frozen_storage_slows_no_request_for_a_known_key(
    azurite_factory: Callable[[], Azurite], gateway_server: Callable[..., GatewayServer]
) -> None:
    storage = azurite_factory()
    with SimulatorThread(SimulatorConfig(name="sim", deployments=("chat",), api_key="sim-key")) as sim:
        # Entries expire every second, so the frozen run revalidates them several times.
        gw = _gateway(storage, sim, gateway_server, GATEWAY_KEY_CACHE_SECONDS="1", GATEWAY_LEDGER_FLUSH_SECONDS="1")
        async with aiohttp.ClientSession() as session:
            key = await _create_key(session, gw)
            normal = await _timed_requests(session, gw, key, 3.0)
            storage.freeze()
            try:
                frozen = await _timed_requests(session, gw, key, 4.0)
                await _assert_storage_routes_answer_503(session, gw, key)
            finally:
                storage.thaw()
            async with session.get(f"{gw.url}/gateway/admin/stats", headers={"x-admin-key": ADMIN}) as response:
                stats = await response.json()
    ratio = _p99(frozen) / _p99(normal)
    print(
        f"\nrequests normal {len(normal)} p99 {_p99(normal) * 1000:.1f} ms; frozen storage {len(frozen)} "
        f"p99 {_p99(frozen) * 1000:.1f} ms max {max(frozen) * 1000:.1f} ms (ratio {ratio:.2f})"
    )
    assert stats["auth"]["stale_answers"] > 0  # the frozen run was answered from revalidated entries
    assert ratio < 3.0, json.dumps({"normal": sorted(normal)[-5:], "frozen": sorted(frozen)[-5:]})
    assert max(frozen) < 1.0  # no request waited for a storage call to time out (1 s here)
