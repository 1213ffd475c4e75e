"""Subscription keys: entropy and hashing, where callers put them, and how fast a change reaches every instance."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace

import pytest

from shared.admin.subscriptions import SubscriptionAdmin
from shared.auth import KEY_PREFIX, Authenticator, hash_key, key_from_headers, new_key
from shared.clock import ManualClock
from shared.config import load_settings
from shared.errors import Forbidden, ServiceUnavailable, StoreUnavailable, Unauthorized
from shared.models import Subscription, SubscriptionState
from shared.stores.embedded import EmbeddedSubscriptionStore
from shared.stores.factory import build_stores
from tests.fixtures.azurite import Azurite, unique_prefix

CACHE_SECONDS = 10.0


def test_a_new_key_carries_32_random_bytes() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert len(base64.urlsafe_b64decode(key[len(KEY_PREFIX) :] + "=")) == 32


def test_keys_are_kept_as_sha256_hashes() -> None:
    assert hash_key("gw-abc") == hashlib.sha256(b"gw-abc").hexdigest()
    assert hash_key("gw-abc") != hash_key("gw-abd")


@pytest.mark.parametrize(
    "headers",
    [
        {"api-key": "k1"},
        {"ocp-apim-subscription-key": "k1"},
        {"authorization": "Bearer k1"},
        {"authorization": "bearer   k1  "},
    ],
)
def test_the_key_is_taken_from_the_headers_openai_and_apim_clients_use(headers: dict[str, str]) -> None:
    assert key_from_headers(headers) == "k1"


def test_no_key_means_none() -> None:
    assert key_from_headers({"authorization": "Basic abc"}) is None
    assert key_from_headers({"api-key": "  "}) is None


async def setup(clock: ManualClock) -> tuple[EmbeddedSubscriptionStore, Authenticator, dict[str, str]]:
    store = EmbeddedSubscriptionStore()
    created = await SubscriptionAdmin(store).create({"name": "team", "tokens_per_minute": 1000})
    return store, Authenticator(store, clock, cache_seconds=CACHE_SECONDS), created


async def test_either_key_authenticates_and_the_caller_carries_the_limits() -> None:
    _, auth, created = await setup(ManualClock())
    for key in (created["primary_key"], created["secondary_key"]):
        caller = await auth.authenticate({"api-key": key})
        assert caller.subscription_id == created["id"]
        assert caller.limits.tokens_per_minute == 1000


async def test_a_missing_or_wrong_key_is_refused_with_401_in_the_openai_envelope() -> None:
    _, auth, _ = await setup(ManualClock())
    for headers in ({}, {"api-key": "gw-not-a-key"}, {"api-key": "x" * 1000}):
        with pytest.raises(Unauthorized) as refused:
            await auth.authenticate(headers)
        assert refused.value.status == 401
        assert refused.value.envelope()["error"]["code"] == "invalid_api_key"


async def test_a_suspension_takes_effect_within_the_cache_time() -> None:
    clock = ManualClock()
    store, auth, created = await setup(clock)
    headers = {"api-key": created["primary_key"]}
    await auth.authenticate(headers)
    await store.modify(created["id"], lambda s: replace(s, state=SubscriptionState.SUSPENDED))
    clock.advance(CACHE_SECONDS - 1)
    await auth.authenticate(headers)  # still cached: the bound is the cache time, not zero
    clock.advance(1.01)
    with pytest.raises(Forbidden) as refused:
        await auth.authenticate(headers)
    assert refused.value.code == "subscription_suspended"


async def test_an_expired_subscription_is_refused() -> None:
    clock = ManualClock(1000.0)
    store, auth, created = await setup(clock)
    await store.modify(created["id"], lambda s: replace(s, expires_at=1500.0))
    clock.advance(CACHE_SECONDS + 500)
    with pytest.raises(Forbidden) as refused:
        await auth.authenticate({"api-key": created["primary_key"]})
    assert refused.value.code == "subscription_expired"


async def test_a_rotated_key_stops_working_within_the_cache_time_and_the_new_one_at_once() -> None:
    clock = ManualClock()
    store, auth, created = await setup(clock)
    old = {"api-key": created["primary_key"]}
    await auth.authenticate(old)
    rotated = await SubscriptionAdmin(store).regenerate(created["id"], "primary")
    await auth.authenticate({"api-key": rotated["primary_key"]})
    await auth.authenticate({"api-key": created["secondary_key"]})  # the other key never stops
    clock.advance(CACHE_SECONDS + 0.01)
    with pytest.raises(Unauthorized):
        await auth.authenticate(old)


class _FlakyStore(EmbeddedSubscriptionStore):
    down = False

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None:
        if self.down:
            raise StoreUnavailable("storage is down")
        return await super().find_by_key_hash(key_hash)


async def test_a_known_key_keeps_working_through_a_store_outage_and_an_unknown_one_gets_503() -> None:
    clock = ManualClock()
    store = _FlakyStore()
    created = await SubscriptionAdmin(store).create({"name": "team"})
    auth = Authenticator(store, clock, cache_seconds=CACHE_SECONDS)
    await auth.authenticate({"api-key": created["primary_key"]})
    store.down = True
    clock.advance(CACHE_SECONDS * 3)
    caller = await auth.authenticate({"api-key": created["primary_key"]})
    assert caller.subscription_id == created["id"]
    assert auth.stale_answers == 1
    with pytest.raises(ServiceUnavailable) as refused:
        await auth.authenticate({"api-key": created["secondary_key"]})
    assert refused.value.status == 503
    store.down = False
    clock.advance(CACHE_SECONDS)
    await auth.authenticate({"api-key": created["secondary_key"]})


@pytest.mark.azurite
async def test_a_suspension_on_one_instance_reaches_another_through_table_storage(azurite: Azurite) -> None:
    env = {
        "GATEWAY_BACKENDS": json.dumps([{"name": "b", "endpoint": "http://127.0.0.1:9", "deployments": ["d"]}]),
        "GATEWAY_STORAGE": azurite.connection_string,
        "GATEWAY_TABLE_PREFIX": unique_prefix(),
    }
    clock = ManualClock()
    one, two = build_stores(load_settings(env)), build_stores(load_settings(env))
    try:
        created = await SubscriptionAdmin(one.subscriptions).create({"name": "team"})
        other = Authenticator(two.subscriptions, clock, cache_seconds=CACHE_SECONDS)
        headers = {"api-key": created["secondary_key"]}
        await other.authenticate(headers)
        await SubscriptionAdmin(one.subscriptions).update(created["id"], {"state": "suspended"})
        clock.advance(CACHE_SECONDS + 0.01)
        with pytest.raises(Forbidden):
            await other.authenticate(headers)
    finally:
        await one.close()
        await two.close()
