"""In-process implementations of every store protocol, for local runs and unit tests (one instance only)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

from shared.models import Subscription
from shared.stores.protocols import (
    AuditEntry,
    CounterChange,
    Counters,
    UsageBatch,
    UsageKey,
    UsageRow,
    Versioned,
)


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

    async def find_by_identity(self, oid: str) -> Subscription | None:
        for sub in self._by_id.values():
            if oid in sub.identities:
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
    """Counter records in a dict: with no await between read and write, every update is atomic."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], dict[str, int]] = {}

    async def update(self, partition: str, row: str, change: CounterChange) -> tuple[Counters, Counters]:
        before = dict(self._rows.get((partition, row), {}))
        after = change(before)
        if after is None:
            return before, before
        self._rows[(partition, row)] = dict(after)
        return before, dict(after)

    async def read(self, partition: str, row: str) -> Counters:
        return dict(self._rows.get((partition, row), {}))


class EmbeddedLedgerStore:
    """Usage rows in a dict: with no await inside `apply`, a batch is applied atomically."""

    def __init__(self) -> None:
        self._rows: dict[UsageKey, UsageRow] = {}

    async def apply(self, batch: UsageBatch) -> None:
        for key, counts in batch.rows.items():
            row = self._rows.get(key)
            if row is None:
                self._rows[key] = UsageRow(key, counts, {batch.writer: batch.sequence})
            elif row.applied.get(batch.writer, 0) < batch.sequence:
                self._rows[key] = UsageRow(key, row.counts.plus(counts), {**row.applied, batch.writer: batch.sequence})

    async def rows(self, start_hour: int, end_hour: int, subscription_id: str | None = None) -> list[UsageRow]:
        return [
            row
            for key, row in self._rows.items()
            if start_hour <= key.hour < end_hour and subscription_id in (None, key.subscription_id)
        ]


class EmbeddedAuditStore:
    def __init__(self) -> None:
        self._entries: list[AuditEntry] = []

    async def append(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    async def recent(self, limit: int, subscription_id: str | None = None) -> list[AuditEntry]:
        newest_first = sorted(self._entries, key=lambda e: e.at, reverse=True)
        return [e for e in newest_first if subscription_id in (None, e.subscription_id)][:limit]
