"""The health-probe timer: `probe_backends` from function_app.py opens the breaker of a backend that is down and
closes it once the backend answers again after its trip duration; the admin backends report shows it all.

The gateway is a real HTTP host with Table Storage state on Azurite and an
injected clock; the timer function runs in the host's own loop, as the
Functions host (or `local.host`) would run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import aiohttp
import pytest
from azure.functions.timer import TimerRequest

from local.host import LocalHost
from shared.clock import ManualClock
from shared.gateway import Gateway
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.servers import GatewayServer, settings_for

SIM_KEY = "sim-key"

pytestmark = [pytest.mark.azurite, pytest.mark.slow]

ADMIN_KEY = "probe-test-admin-key"
DEMO_KEY = "gw-probe-test-key-0123456789abcdef"
TRIP = 30.0


@pytest.fixture
def sims() -> Iterator[tuple[SimulatorThread, SimulatorThread]]:
    with ExitStack() as stack:
        yield tuple(  # type: ignore[misc]
            stack.enter_context(SimulatorThread(SimulatorConfig(name=n, deployments=("chat",), api_key=SIM_KEY)))
            for n in ("sim1", "sim2")
        )


@pytest.fixture
def host(
    azurite: Azurite, sims: tuple[SimulatorThread, SimulatorThread], gateway_server: Callable[..., GatewayServer]
) -> tuple[GatewayServer, ManualClock]:
    clock = ManualClock(time.time())
    backends = [
        {"name": "sim1", "endpoint": sims[0].url, "priority": 1, "deployments": ["chat"]},
        {"name": "sim2", "endpoint": sims[1].url, "priority": 2, "deployments": ["chat"]},
    ]
    settings = settings_for(
        backends,
        SIM_KEY=SIM_KEY,
        GATEWAY_STORAGE=azurite.connection_string,
        GATEWAY_TABLE_PREFIX=unique_prefix(),
        GATEWAY_BREAKER=f'{{"trip_seconds": {TRIP}}}',
        GATEWAY_ADMIN_KEY=ADMIN_KEY,
        GATEWAY_DEMO_KEY=DEMO_KEY,
    )
    return gateway_server(lambda: Gateway(settings, clock=clock)), clock


def run_timer(server: GatewayServer) -> None:
    import function_app

    server.run(function_app.probe_backends(TimerRequest(past_due=False)))


async def backends(server: GatewayServer) -> dict[str, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/gateway/admin/backends", headers={"x-admin-key": ADMIN_KEY}) as response,
    ):
        assert response.status == 200
        report = await response.json()
    return {row["backend"]: row for row in report["data"]}


async def test_the_probe_opens_the_breaker_of_a_down_backend_and_closes_it_after_recovery(
    host: tuple[GatewayServer, ManualClock], sims: tuple[SimulatorThread, SimulatorThread]
) -> None:
    server, clock = host
    run_timer(server)
    rows = await backends(server)
    assert rows["sim1"]["breaker"] == "closed"
    assert rows["sim1"]["last_probe"]["ok"] is True
    assert rows["sim1"]["last_probe"]["latency_ms"] > 0

    sims[0].set_faults(down=True)
    run_timer(server)
    rows = await backends(server)
    sim1 = rows["sim1"]
    assert sim1["breaker"] == "open"
    assert sim1["breaker_reason"].startswith("probe:")
    assert sim1["open_until"] is not None
    assert sim1["last_probe"]["ok"] is False
    assert rows["sim2"]["breaker"] == "closed"

    sims[0].clear_faults()
    run_timer(server)  # up again, but the trip duration is not over: it stays open
    assert (await backends(server))["sim1"]["breaker"] == "open"
    clock.advance(TRIP + 1)
    run_timer(server)
    rows = await backends(server)
    assert rows["sim1"]["breaker"] == "closed"
    assert rows["sim1"]["last_probe"]["ok"] is True
    assert rows["sim1"]["trips"] == 1


async def test_the_report_shows_when_a_throttled_backend_returns(
    host: tuple[GatewayServer, ManualClock], sims: tuple[SimulatorThread, SimulatorThread]
) -> None:
    server, _ = host
    sims[0].set_faults(throttle_rate=1.0, retry_after=20)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/openai/deployments/chat/chat/completions?api-version=2024-10-21",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            headers={"api-key": DEMO_KEY},
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["x-gateway-backend"] == "sim2"
    rows = await backends(server)
    assert rows["sim1"]["throttled_until"] is not None
    assert rows["sim1"]["breaker"] == "closed"  # a 429 is not a failure
    assert rows["sim2"]["throttled_until"] is None


def test_the_local_host_runs_the_probe_on_the_configured_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PROBE_SCHEDULE", "*/15 * * * * *")
    timers = {t.name: t for t in LocalHost().timers}
    assert timers["probe_backends"].expression == "*/15 * * * * *"
