"""In-process implementations of every store protocol, for local runs and unit tests (one instance only)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

from shared.clock import SYSTEM_CLOCK, Clock
from shared.models import Subscription
from shared.stores.protocols import Versioned


class EmbeddedSubscriptionStore:
    def __init__(self) -> None:
        self._by_id: dict[str, Subscription] = {}

    async def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None:
        for sub in self._by_id.values():
            if key_hash in (sub.primary_key_hash, sub.secondary_key_hash):
                return sub
        return None

    async def create(self, subscription: Subscription) -> None:
        if subscription.id in self._by_id:
            raise ValueError(f"subscription {subscription.id} exists")
        self._by_id[subscription.id] = subscription

    async def modify(self, subscription_id: str, change: Callable[[Subscription], Subscription]) -> Subscription | None:
        current = self._by_id.get(subscription_id)
        if current is None:
            return None
        updated = change(current)
        self._by_id[subscription_id] = updated
        return updated

    async def delete(self, subscription_id: str) -> bool:
        return self._by_id.pop(subscription_id, None) is not None

    async def list(self) -> list[Subscription]:
        return sorted(self._by_id.values(), key=lambda s: s.created_at)


class EmbeddedBreakerStore:
    def __init__(self) -> None:
        self._records: dict[str, tuple[dict[str, object], str]] = {}
        self._versions = itertools.count(1)
        self._probes: dict[str, dict[str, object]] = {}

    async def load_all(self) -> dict[str, Versioned[dict[str, object]]]:
        return {k: Versioned(copy.deepcopy(rec), etag) for k, (rec, etag) in self._records.items()}

    async def load(self, key: str) -> Versioned[dict[str, object] | None]:
        found = self._records.get(key)
        if found is None:
            return Versioned(None, None)
        return Versioned(copy.deepcopy(found[0]), found[1])

    async def save(self, key: str, record: dict[str, object], etag: str | None) -> str | None:
        found = self._records.get(key)
        if (found[1] if found else None) != etag:
            return None
        new_etag = str(next(self._versions))
        self._records[key] = (copy.deepcopy(record), new_etag)
        return new_etag

    async def save_probe(self, key: str, record: dict[str, object]) -> None:
        self._probes[key] = dict(record)

    async def load_probes(self) -> dict[str, dict[str, object]]:
        return {k: dict(v) for k, v in self._probes.items()}


class EmbeddedCounterStore:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._counters: dict[tuple[str, int], tuple[int, float]] = {}  # -> (value, expires_at)

    async def take(self, key: str, window: int, amount: int, cap: int, ttl_seconds: float) -> tuple[int, int]:
        now = self._clock.now()
        if len(self._counters) > 10_000:  # windows expire; drop them so memory stays bounded
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        value, _ = self._counters.get((key, window), (0, 0.0))
        applied = max(-value, amount) if amount < 0 else max(0, min(amount, cap - value))
        value += applied
        self._counters[(key, window)] = (value, now + ttl_seconds)
        return applied, value

    async def read(self, key: str, window: int) -> int:
        return self._counters.get((key, window), (0, 0.0))[0]
