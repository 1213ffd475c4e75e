"""One contract for every state store, run against both implementations: embedded, and Table Storage on Azurite.

Whatever the gateway relies on (round trips, compare-and-swap that lets
exactly one writer win, key lookups that follow rotations) is asserted here
once, and each implementation must pass all of it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from shared.auth import hash_key
from shared.backendconfig import BreakerPolicy
from shared.breaker import BreakerBoard, Status, window_totals
from shared.clock import ManualClock
from shared.config import load_settings
from shared.errors import BadRequest
from shared.models import (
    AuthMode,
    Budget,
    BudgetAction,
    Limits,
    QuotaPeriod,
    Subscription,
    SubscriptionState,
    UserKey,
    UserLimits,
)
from shared.stores.factory import Stores, build_stores
from tests.fixtures.azurite import unique_prefix

BACKENDS = json.dumps([{"name": "b", "endpoint": "http://127.0.0.1:9", "deployments": ["d"]}])


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


def subscription(sub_id: str = "sub-1", created_at: float = 1_800_000_000.0) -> Subscription:
    return Subscription(
        id=sub_id,
        name=f"team {sub_id}",
        state=SubscriptionState.ACTIVE,
        primary_key_hash=hash_key(f"primary {sub_id}"),
        secondary_key_hash=hash_key(f"secondary {sub_id}"),
        limits=Limits(
            tokens_per_minute=1000, requests_per_minute=10, token_quota=50_000, token_quota_period=QuotaPeriod.DAILY
        ),
        allowed_deployments=("gpt-4o-mini",),
        expires_at=1_900_000_000.5,
        created_at=created_at,
        cache_opt_out=True,
    )


# --- subscriptions ------------------------------------------------------------------------------


async def test_a_created_subscription_reads_back_whole(stores: Stores) -> None:
    sub = subscription()
    await stores.subscriptions.create(sub)
    assert await stores.subscriptions.get(sub.id) == sub


async def test_creating_an_existing_id_is_refused(stores: Stores) -> None:
    await stores.subscriptions.create(subscription())
    with pytest.raises(ValueError, match="exists"):
        await stores.subscriptions.create(replace(subscription(), name="other"))


async def test_either_key_finds_the_subscription_and_an_unknown_one_nothing(stores: Stores) -> None:
    sub = subscription()
    await stores.subscriptions.create(sub)
    assert await stores.subscriptions.find_by_key_hash(sub.primary_key_hash) == sub
    assert await stores.subscriptions.find_by_key_hash(sub.secondary_key_hash) == sub
    assert await stores.subscriptions.find_by_key_hash(hash_key("nobody's key")) is None


async def test_unknown_or_malformed_ids_are_simply_absent(stores: Stores) -> None:
    assert await stores.subscriptions.get("sub-missing") is None
    assert await stores.subscriptions.get("a/b#c?d") is None
    assert await stores.subscriptions.modify("sub-missing", lambda s: s) is None
    assert await stores.subscriptions.delete("sub-missing") is False


async def test_modify_stores_the_change_and_key_lookups_see_it(stores: Stores) -> None:
    sub = subscription()
    await stores.subscriptions.create(sub)
    changed = await stores.subscriptions.modify(sub.id, lambda s: replace(s, state=SubscriptionState.SUSPENDED))
    assert changed is not None
    assert changed.state is SubscriptionState.SUSPENDED
    assert await stores.subscriptions.get(sub.id) == changed
    assert await stores.subscriptions.find_by_key_hash(sub.primary_key_hash) == changed


async def test_a_rotated_key_stops_finding_the_subscription_and_the_other_key_keeps_working(stores: Stores) -> None:
    sub = subscription()
    await stores.subscriptions.create(sub)
    new_hash = hash_key("rotated primary")
    await stores.subscriptions.modify(sub.id, lambda s: replace(s, primary_key_hash=new_hash))
    assert await stores.subscriptions.find_by_key_hash(sub.primary_key_hash) is None
    found = await stores.subscriptions.find_by_key_hash(new_hash)
    assert found is not None
    assert found.id == sub.id
    assert await stores.subscriptions.find_by_key_hash(sub.secondary_key_hash) == found


async def test_a_change_that_raises_leaves_the_subscription_as_it_was(stores: Stores) -> None:
    sub = subscription()
    await stores.subscriptions.create(sub)

    def refuse(s: Subscription) -> Subscription:
        raise BadRequest("no")

    with pytest.raises(BadRequest):
        await stores.subscriptions.modify(sub.id, refuse)
    assert await stores.subscriptions.get(sub.id) == sub


async def test_concurrent_modifications_are_all_applied(stores: Stores) -> None:
    sub = replace(subscription(), allowed_deployments=())
    await stores.subscriptions.create(sub)

    def adding(name: str):  # type: ignore[no-untyped-def]
        return lambda s: replace(s, allowed_deployments=(*s.allowed_deployments, name))

    await asyncio.gather(*(stores.subscriptions.modify(sub.id, adding(f"d{i}")) for i in range(8)))
    final = await stores.subscriptions.get(sub.id)
    assert final is not None
    assert sorted(final.allowed_deployments) == sorted(f"d{i}" for i in range(8))


async def test_delete_removes_the_subscription_and_its_keys(stores: Stores) -> None:
    sub = subscription()
    await stores.subscriptions.create(sub)
    assert await stores.subscriptions.delete(sub.id) is True
    assert await stores.subscriptions.get(sub.id) is None
    assert await stores.subscriptions.find_by_key_hash(sub.primary_key_hash) is None
    assert await stores.subscriptions.find_by_key_hash(sub.secondary_key_hash) is None
    assert await stores.subscriptions.delete(sub.id) is False


async def test_list_returns_every_subscription_oldest_first(stores: Stores) -> None:
    for i, created in enumerate((30.0, 10.0, 20.0)):
        await stores.subscriptions.create(subscription(f"sub-{i}", created_at=created))
    assert [s.id for s in await stores.subscriptions.list()] == ["sub-1", "sub-2", "sub-0"]


OID_A = "0a0a0a0a-0000-4000-8000-00000000000a"
OID_B = "0b0b0b0b-0000-4000-8000-00000000000b"


def with_identity(sub: Subscription) -> Subscription:
    return replace(
        sub,
        identities=(OID_A,),
        auth_modes=frozenset({AuthMode.ENTRA}),
        user_limits=UserLimits(UserKey.HEADER, "x-user-id", 100, 1000, QuotaPeriod.DAILY),
        budget=Budget(12.5, QuotaPeriod.MONTHLY, "EUR", (50, 100), BudgetAction.ALERT),
    )


async def test_identities_user_limits_and_budget_read_back_whole(stores: Stores) -> None:
    sub = with_identity(subscription())
    await stores.subscriptions.create(sub)
    assert await stores.subscriptions.get(sub.id) == sub
    assert await stores.subscriptions.find_by_identity(OID_A) == sub
    assert await stores.subscriptions.find_by_identity(OID_B) is None


async def test_an_identity_lookup_follows_changes_and_deletes(stores: Stores) -> None:
    sub = with_identity(subscription())
    await stores.subscriptions.create(sub)
    await stores.subscriptions.modify(sub.id, lambda s: replace(s, identities=(OID_B,)))
    assert await stores.subscriptions.find_by_identity(OID_A) is None
    found = await stores.subscriptions.find_by_identity(OID_B)
    assert found is not None
    assert found.id == sub.id
    assert found.identities == (OID_B,)
    # A change to anything else is seen through the identity too (the lookup row carries the subscription).
    await stores.subscriptions.modify(sub.id, lambda s: replace(s, state=SubscriptionState.SUSPENDED))
    found = await stores.subscriptions.find_by_identity(OID_B)
    assert found is not None
    assert found.state is SubscriptionState.SUSPENDED
    await stores.subscriptions.delete(sub.id)
    assert await stores.subscriptions.find_by_identity(OID_B) is None


# --- breakers and probes --------------------------------------------------------------------------


async def test_a_breaker_record_is_absent_until_created_once(stores: Stores) -> None:
    key = "backend-a|gpt-4o-mini"
    missing = await stores.backends.load(key)
    assert missing.value is None
    assert missing.etag is None
    etag = await stores.backends.save(key, {"status": "open", "open_until": 12.5}, None)
    assert etag is not None
    assert await stores.backends.save(key, {"status": "closed"}, None) is None  # someone created it first
    loaded = await stores.backends.load(key)
    assert loaded.value == {"status": "open", "open_until": 12.5}
    assert loaded.etag == etag


async def test_a_breaker_write_from_a_stale_version_is_refused(stores: Stores) -> None:
    key = "backend-a|gpt-4o-mini"
    first = await stores.backends.save(key, {"n": 1}, None)
    second = await stores.backends.save(key, {"n": 2}, first)
    assert second is not None
    assert await stores.backends.save(key, {"n": 3}, first) is None
    assert (await stores.backends.load(key)).value == {"n": 2}


async def test_of_concurrent_writers_from_one_version_exactly_one_wins(stores: Stores) -> None:
    key = "backend-a|gpt-4o-mini"
    etag = await stores.backends.save(key, {"owner": None}, None)
    results = await asyncio.gather(*(stores.backends.save(key, {"owner": i}, etag) for i in range(6)))
    winners = [i for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1
    assert (await stores.backends.load(key)).value == {"owner": winners[0]}


async def test_load_all_returns_every_breaker_with_its_version(stores: Stores) -> None:
    etags = {k: await stores.backends.save(k, {"k": k}, None) for k in ("a|x", "b|x", "b|y")}
    loaded = await stores.backends.load_all()
    assert {k: (v.value, v.etag) for k, v in loaded.items()} == {k: ({"k": k}, e) for k, e in etags.items()}


async def test_two_boards_share_a_rate_window_through_the_store(stores: Stores) -> None:
    # The rate rule's buckets live in the record itself: no store change, the same on Table Storage.
    clock = ManualClock(1_800_000_000.0)
    policy = BreakerPolicy(failure_rate=0.5, min_requests=10, window_seconds=10)
    a = BreakerBoard(policy, stores.backends, clock, "a")
    b = BreakerBoard(policy, stores.backends, clock, "b")
    key = "backend-a|gpt-4o-mini"
    for _ in range(12):
        await b.success(key)
    for _ in range(5):
        await a.failure(key, retry_after=None, reason="500")
    await b.sync()  # finds failures in the shared window: writes its twelve successes
    await a.sync()
    assert window_totals(policy, a.state(key).window, clock.now()) == (17, 5)
    for _ in range(6):
        await a.failure(key, retry_after=None, reason="500")
    assert a.state(key).status is Status.CLOSED  # 11 of 23: a alone would have tripped at 10 of 10
    await a.failure(key, retry_after=None, reason="500")
    assert a.state(key).status is Status.OPEN  # 12 of 24
    await b.sync()
    assert b.state(key).status is Status.OPEN


async def test_probe_results_keep_the_last_write(stores: Stores) -> None:
    await stores.backends.save_probe("a|x", {"ok": False, "latency_ms": 3.5})
    await stores.backends.save_probe("a|x", {"ok": True, "latency_ms": 1.25})
    await stores.backends.save_probe("b|x", {"ok": True, "latency_ms": 2.0})
    assert await stores.backends.load_probes() == {
        "a|x": {"ok": True, "latency_ms": 1.25},
        "b|x": {"ok": True, "latency_ms": 2.0},
    }
    assert await stores.backends.load_all() == {}  # probes are not breakers


# --- counters -------------------------------------------------------------------------------------


async def test_a_counter_update_sees_the_stored_values_and_returns_both_sides(stores: Stores) -> None:
    before, after = await stores.counters.update("sub-1", "rate", lambda s: {"window": 60, "tokens": 5})
    assert (before, after) == ({}, {"window": 60, "tokens": 5})
    before, after = await stores.counters.update("sub-1", "rate", lambda s: {**s, "tokens": s["tokens"] + 2**40})
    assert before == {"window": 60, "tokens": 5}
    assert after == {"window": 60, "tokens": 5 + 2**40}  # 64-bit counters
    assert await stores.counters.read("sub-1", "rate") == after
    assert await stores.counters.read("sub-1", "quota") == {}


async def test_a_counter_change_returning_none_writes_nothing(stores: Stores) -> None:
    await stores.counters.update("sub-1", "rate", lambda s: {"tokens": 1})
    before, after = await stores.counters.update("sub-1", "rate", lambda s: None)
    assert before == after == {"tokens": 1}


async def test_concurrent_counter_updates_are_all_applied(stores: Stores) -> None:
    def add_one(stored: dict[str, int]) -> dict[str, int]:
        return {"tokens": stored.get("tokens", 0) + 1}

    await asyncio.gather(*(stores.counters.update("sub-1", "rate", add_one) for _ in range(12)))  # type: ignore[arg-type]
    assert await stores.counters.read("sub-1", "rate") == {"tokens": 12}
