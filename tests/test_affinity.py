"""Affinity: the store contract (embedded, and Table Storage on Azurite), placement of calls naming stored objects,
and a chain of Responses follow-ups across two gateway instances sharing Azurite."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from openai import OpenAI

from shared.affinity import Affinity, place
from shared.api import ApiCall
from shared.backendconfig import BreakerPolicy
from shared.breaker import BreakerBoard
from shared.clock import ManualClock
from shared.config import load_settings
from shared.errors import AffinityUnavailable, BadRequest, NotFound
from shared.gateway import Gateway
from shared.models import Caller, GatewayRequest, Limits, Operation
from shared.proxy import BackendCall, Exhausted, Proxy
from shared.routing import ACCOUNT, Router
from shared.stores.embedded import EmbeddedBreakerStore
from shared.stores.factory import Stores, build_stores
from shared.stores.protocols import Pin
from shared.surface import route
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.servers import GatewayServer, settings_for

BACKENDS = json.dumps([{"name": "b", "endpoint": "http://127.0.0.1:9", "deployments": ["d"]}])
KEY = "test-subscription-key-0123456789abcdef"


@pytest.fixture(params=["embedded", pytest.param("tables", marks=pytest.mark.azurite)])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    env = {"GATEWAY_BACKENDS": BACKENDS}
    if request.param == "tables":
        azurite = request.getfixturevalue("azurite")
        env |= {"GATEWAY_STORAGE": azurite.connection_string, "GATEWAY_TABLE_PREFIX": unique_prefix()}
    built = build_stores(load_settings(env))
    assert built.kind == request.param
    yield built
    await built.close()


# --- the store contract ---------------------------------------------------------------------------


async def test_a_pin_reads_back_whole_until_it_expires(stores: Stores) -> None:
    pin = Pin("east", "sub-1", "gpt-4o", 1_800_000_100.5)
    await stores.affinity.pin("resp_abc123", pin)
    assert await stores.affinity.find("resp_abc123", 1_800_000_000.0) == pin
    assert await stores.affinity.find("resp_abc123", 1_800_000_100.5) is None  # expired: as good as absent
    assert await stores.affinity.find("resp_abc123", 1_800_000_000.0) is None  # and removed when found expired


async def test_unknown_ids_are_absent_and_forgetting_them_is_fine(stores: Stores) -> None:
    assert await stores.affinity.find("file-nothing", 0.0) is None
    await stores.affinity.forget("file-nothing")


async def test_a_pin_can_be_replaced_and_forgotten(stores: Stores) -> None:
    await stores.affinity.pin("batch_1", Pin("east", "sub-1", "", 2e9))
    await stores.affinity.pin("batch_1", Pin("west", "sub-1", "", 2e9))
    found = await stores.affinity.find("batch_1", 0.0)
    assert found is not None
    assert found.backend == "west"
    await stores.affinity.forget("batch_1")
    assert await stores.affinity.find("batch_1", 0.0) is None


async def test_ids_table_storage_cannot_key_are_stored_all_the_same(stores: Stores) -> None:
    odd = "resp/with#odd?chars and spaces" + "x" * 300
    await stores.affinity.pin(odd, Pin("east", "sub-1", "d", 2e9))
    found = await stores.affinity.find(odd, 0.0)
    assert found is not None
    assert found.backend == "east"
    assert await stores.affinity.find(odd[:-1], 0.0) is None


# --- placement ------------------------------------------------------------------------------------


def _router(clock: ManualClock) -> Router:
    settings = settings_for(
        [
            {"name": "a", "endpoint": "http://127.0.0.1:9", "deployments": ["chat"]},
            {"name": "b", "endpoint": "http://127.0.0.1:9", "deployments": ["chat", "other"]},
        ]
    )
    breakers = BreakerBoard(BreakerPolicy(), EmbeddedBreakerStore(), clock, "test")
    return Router(settings.backends, breakers, clock)


def _caller(sub: str) -> Caller:
    return Caller(sub, sub, Limits())


def _request(method: str, path: str) -> GatewayRequest:
    return GatewayRequest(method, path, {}, {}, b"", "r")


async def test_a_call_naming_a_pinned_object_goes_to_its_backend_and_only_its_owner_may_name_it() -> None:
    clock = ManualClock(1_800_000_000.0)
    stores = build_stores(load_settings({"GATEWAY_BACKENDS": BACKENDS}))
    affinity = Affinity(stores.affinity, clock, ttl_seconds=60)
    router = _router(clock)
    await affinity.pin(_caller("s1"), "resp_1", "b", "chat")
    get = route(_request("GET", "/v1/responses/resp_1"))
    call = ApiCall(Operation.RESPONSES_RETRIEVE, "", {}, "v1")
    placed = await place(affinity, router, _caller("s1"), get, call)
    assert (placed.pinned, placed.deployment, placed.seek) == ("b", "chat", False)
    with pytest.raises(NotFound):
        await place(affinity, router, _caller("s2"), get, call)
    follow = ApiCall(Operation.RESPONSES_CREATE, "other", {"previous_response_id": "resp_1", "input": "x"}, "v1")
    placed = await place(affinity, router, _caller("s1"), route(_request("POST", "/v1/responses")), follow)
    assert placed.pinned == "b"
    await affinity.pin(_caller("s1"), "resp_2", "a", "chat")
    moved = ApiCall(Operation.RESPONSES_CREATE, "other", {"previous_response_id": "resp_2", "input": "x"}, "v1")
    with pytest.raises(BadRequest):  # backend a does not serve "other": say so rather than send it elsewhere
        await place(affinity, router, _caller("s1"), route(_request("POST", "/v1/responses")), moved)
    clock.advance(61)
    placed = await place(affinity, router, _caller("s1"), get, call)  # expired: looked for everywhere
    assert (placed.pinned, placed.deployment, placed.seek) == (None, ACCOUNT, True)


# --- two instances, one Azurite -------------------------------------------------------------------


@pytest.fixture
def two_sims() -> Iterator[tuple[SimulatorThread, SimulatorThread]]:
    sims = [
        SimulatorThread(SimulatorConfig(name=n, deployments=("chat",), api_key="sim-key")).start() for n in ("a", "b")
    ]
    yield sims[0], sims[1]
    for sim in sims:
        sim.stop()


@pytest.mark.azurite
def test_a_chain_of_follow_ups_from_two_instances_lands_where_each_predecessor_is_stored(
    azurite: Azurite,
    two_sims: tuple[SimulatorThread, SimulatorThread],
    gateway_server: Callable[..., GatewayServer],
) -> None:
    a, b = two_sims
    backends: list[dict[str, Any]] = [
        {"name": "a", "endpoint": a.url, "weight": 1, "deployments": ["chat"]},
        {"name": "b", "endpoint": b.url, "weight": 1, "deployments": ["chat"]},
    ]
    settings = settings_for(
        backends,
        GATEWAY_DEMO_KEY=KEY,
        GATEWAY_STORAGE=azurite.connection_string,
        GATEWAY_TABLE_PREFIX=unique_prefix(),
    )
    first = gateway_server(lambda: Gateway(settings, instance_id="one"))
    second = gateway_server(lambda: Gateway(settings, instance_id="two"))
    clients = [OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0) for gw in (first, second)]
    homes: set[str] = set()
    for chain in range(2):  # two chains, so both backends are (very likely) someone's home
        made = clients[chain % 2].responses.with_raw_response.create(
            model="chat", input=f"Chain {chain}", max_output_tokens=3
        )
        home = made.headers["x-gateway-backend"]
        homes.add(home)
        previous = made.parse().id
        for turn in range(8):
            reply = clients[(turn + 1 + chain) % 2].responses.with_raw_response.create(
                model="chat", input=f"Turn {turn}", previous_response_id=previous, max_output_tokens=3
            )
            assert reply.headers["x-gateway-backend"] == home, f"chain {chain} turn {turn}"
            previous = reply.parse().id
        for client in clients:
            assert client.responses.retrieve(previous).id == previous
    # Every follow-up reached the home backend: no 404 was ever answered by a simulator.
    statuses = [r["status"] for sim in (a, b) for r in sim.requests()]
    assert "404" not in statuses


async def test_of_two_claims_of_one_marker_exactly_one_wins(stores: Stores) -> None:
    pin = Pin("east", "sub-1", "", 2e9)
    assert await stores.affinity.claim("usage-batch_1", pin)
    assert not await stores.affinity.claim("usage-batch_1", pin)
    assert await stores.affinity.claim("usage-batch_2", pin)


async def test_a_pinned_call_whose_backend_breaker_is_open_is_503_with_retry_after_and_tries_nothing() -> None:
    clock = ManualClock(1_800_000_000.0)
    settings = settings_for([{"name": "a", "endpoint": "http://127.0.0.1:9", "deployments": ["chat"]}])
    breakers = BreakerBoard(BreakerPolicy(mode="count", failures=1), EmbeddedBreakerStore(), clock, "test")
    router = Router(settings.backends, breakers, clock)
    key = BreakerBoard.key("a", "chat")
    for _ in range(3):
        await breakers.failure(key, retry_after=None, reason="500")
    assert not await breakers.allow(key)

    async def no_session() -> Any:
        raise AssertionError("nothing may be sent")

    proxy = Proxy(router, breakers, {}, no_session, clock, max_attempts=3, default_throttle_seconds=7)
    call = BackendCall("chat", "responses.create", b"{}", False, False, "r", "v1", {}, pinned="a")
    result = await proxy.forward(call)
    assert isinstance(result, Exhausted)
    assert isinstance(result.error, AffinityUnavailable)
    assert result.error.status == 503
    assert int(result.error.headers["Retry-After"]) >= 1  # when the breaker lets a trial through
    assert result.attempts == ()
