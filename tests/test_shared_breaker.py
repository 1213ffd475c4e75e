"""One circuit breaker per backend deployment, shared by two gateway instances through Table Storage (Azurite).

Both instances are real HTTP hosts in this process with their own store
clients and breaker boards, on one injected clock, so trip durations pass
without sleeping. The simulator answers for two backends: `sim1` (priority 1,
made to fail) and `sim2` (priority 2, the spare every request fails over to).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import aiohttp
import pytest

from shared.breaker import BreakerBoard, Status
from shared.clock import ManualClock
from shared.gateway import Gateway
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.servers import GatewayServer, settings_for

SIM_KEY = "sim-key"

pytestmark = [pytest.mark.azurite, pytest.mark.slow]

DEMO_KEY = "gw-breaker-test-key-0123456789abcdef"
KEY = BreakerBoard.key("sim1", "chat")
TRIP = 30.0
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


@dataclass
class Instance:
    server: GatewayServer
    attempts: list[float]  # clock times at which this instance sent a request to sim1 (all fail in this test)

    @property
    def board(self) -> BreakerBoard:
        assert self.server.gateway is not None
        return self.server.gateway.breakers


def spy_on_sim1(server: GatewayServer, clock: ManualClock) -> list[float]:
    """Record every failure reported for sim1: while sim1 fails, that is every request sent to it."""
    assert server.gateway is not None
    board = server.gateway.breakers
    original = board.failure
    seen: list[float] = []

    async def failure(key: str, *, retry_after: float | None, reason: str) -> None:
        if key == KEY:
            seen.append(clock.now())
        await original(key, retry_after=retry_after, reason=reason)

    board.failure = failure  # type: ignore[method-assign]  # a spy on this one board
    return seen


@pytest.fixture
def sims() -> Iterator[tuple[SimulatorThread, SimulatorThread]]:
    with ExitStack() as stack:
        yield tuple(  # type: ignore[misc]
            stack.enter_context(SimulatorThread(SimulatorConfig(name=n, deployments=("chat",), api_key=SIM_KEY)))
            for n in ("sim1", "sim2")
        )


@pytest.fixture
async def pair(
    azurite: Azurite, sims: tuple[SimulatorThread, SimulatorThread], gateway_server: Callable[..., GatewayServer]
) -> AsyncIterator[tuple[Instance, Instance, ManualClock]]:
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
        GATEWAY_BREAKER=f'{{"mode": "count", "failures": 3, "trip_seconds": {TRIP}, "trial_timeout_seconds": 10}}',
        GATEWAY_BREAKER_SYNC_SECONDS="2",
        GATEWAY_DEMO_KEY=DEMO_KEY,
    )
    instances = []
    for name in ("instance-a", "instance-b"):
        server = gateway_server(lambda name=name: Gateway(settings, clock=clock, instance_id=name))
        instances.append(Instance(server, spy_on_sim1(server, clock)))
    yield instances[0], instances[1], clock
    sims[0].clear_faults()


async def ask(session: aiohttp.ClientSession, instance: Instance) -> str:
    """One chat request; the backend that answered it."""
    url = f"{instance.server.url}/openai/deployments/chat/chat/completions?api-version=2024-10-21"
    async with session.post(url, json=BODY, headers={"api-key": DEMO_KEY}) as response:
        assert response.status == 200, await response.text()
        return response.headers["x-gateway-backend"]


async def test_a_trip_on_one_instance_stops_the_other_within_five_seconds(
    pair: tuple[Instance, Instance, ManualClock], sims: tuple[SimulatorThread, SimulatorThread]
) -> None:
    a, b, clock = pair
    async with aiohttp.ClientSession() as session:
        assert await ask(session, b) == "sim1"  # b is healthy and has synced the (empty) shared state
        sims[0].set_faults(error_rate=1.0, error_status=500)
        for _ in range(3):
            assert await ask(session, a) == "sim2"  # each fails over; the third failure trips a's breaker
        assert a.board.state(KEY).status is Status.OPEN
        tripped_at = clock.now()
        for _ in range(20):  # requests to b every 0.5 s of clock time
            assert await ask(session, b) == "sim2"
            clock.advance(0.5)
            await asyncio.sleep(0.05)  # let b's background refresh, if one started, finish
    assert b.board.state(KEY).status is Status.OPEN
    late = [t - tripped_at for t in b.attempts if t > tripped_at + 5.0]
    assert late == [], f"b still sent to sim1 {late} s after the trip"
    assert len(b.attempts) <= 2  # at most what b sent before its next refresh (every 2 s)


async def test_only_one_instance_holds_the_half_open_trial_and_recovery_reaches_both(
    pair: tuple[Instance, Instance, ManualClock], sims: tuple[SimulatorThread, SimulatorThread]
) -> None:
    a, b, clock = pair
    async with aiohttp.ClientSession() as session:
        sims[0].set_faults(error_rate=1.0, error_status=500)
        for _ in range(3):
            await ask(session, a)
        clock.advance(2.5)
        await ask(session, b)  # b refreshes and sees the open breaker
        await asyncio.sleep(0.1)
        before = {"a": len(a.attempts), "b": len(b.attempts)}

        clock.advance(TRIP)  # the trip is over: a trial is due, and both instances get traffic at once
        answers = await asyncio.gather(*(ask(session, x) for x in (a, b) * 6))
        assert set(answers) == {"sim2"}  # sim1 still fails: the trial fails over like any request
        trial_holders = {name for name, x in (("a", a), ("b", b)) if len(x.attempts) > before[name]}
        assert len(trial_holders) == 1, trial_holders
        clock.advance(2.5)
        await asyncio.gather(ask(session, a), ask(session, b))
        await asyncio.sleep(0.1)
        assert a.board.state(KEY).status is Status.OPEN  # the failed trial opened it again, for everyone
        assert b.board.state(KEY).status is Status.OPEN

        sims[0].clear_faults()  # sim1 recovers
        clock.advance(TRIP + 1)
        served = [await ask(session, x) for x in (a, b, a, b)]
        assert "sim1" in served  # the trial succeeded and closed the shared breaker
        clock.advance(2.5)
        await asyncio.gather(ask(session, a), ask(session, b))  # each refreshes within its sync interval
        await asyncio.sleep(0.1)
        assert [await ask(session, x) for x in (a, b)] == ["sim1", "sim1"]
