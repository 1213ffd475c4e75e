"""The small async protocols every kind of shared state sits behind.

Each protocol has two implementations: Azure (`stores/tables/`; the vector
cache's `stores/cosmos.py`) and embedded (`stores/embedded.py`, the vector
cache's `stores/vectors.py`; in-process). `stores/factory.py` picks one from
configuration. Implementations raise `shared.errors.StoreUnavailable` when
the backing service cannot be reached, and nothing else of their own; one
contract suite (tests/test_stores_contract.py) runs against both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from shared.models import Subscription

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]

T = TypeVar("T")


class SubscriptionStore(Protocol):
    async def get(self, subscription_id: str) -> Subscription | None: ...

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None: ...

    async def find_by_identity(self, oid: str) -> Subscription | None:
        """The subscription whose `identities` list this Entra object id (lower case), if any."""
        ...

    async def create(self, subscription: Subscription) -> None:
        """Store a new subscription; `ValueError` if the id exists."""
        ...

    async def modify(self, subscription_id: str, change: Callable[[Subscription], Subscription]) -> Subscription | None:
        """Read-modify-write with compare-and-swap (retried on conflict); None if absent.

        `change` may run more than once (once per conflict); exceptions it raises propagate unchanged.
        """
        ...

    async def delete(self, subscription_id: str) -> bool: ...

    async def list(self) -> list[Subscription]: ...


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A value with the version (ETag) it was read at, for compare-and-swap."""

    value: T
    etag: str | None  # None: not stored yet


class BreakerStore(Protocol):
    """Shared breaker records, one per (backend, deployment) key, as opaque JSON-able dicts."""

    async def load_all(self) -> dict[str, Versioned[dict[str, object]]]: ...

    async def load(self, key: str) -> Versioned[dict[str, object] | None]: ...

    async def save(self, key: str, record: dict[str, object], etag: str | None) -> str | None:
        """Write if the stored version still is `etag` (None: only if absent); the new etag, or None on conflict."""
        ...


class ProbeStore(Protocol):
    """Last health-probe result per (backend, deployment) key."""

    async def save_probe(self, key: str, record: dict[str, object]) -> None: ...

    async def load_probes(self) -> dict[str, dict[str, object]]: ...


class BackendStateStore(BreakerStore, ProbeStore, Protocol):
    """Breakers and probe results live side by side."""


Counters = Mapping[str, int]
CounterChange = Callable[[Counters], "dict[str, int] | None"]


class CounterStore(Protocol):
    """Small records of named integers, changed only by compare-and-swap: the shared side of the limits.

    A record is addressed by (partition, row); the limiter keeps one per
    subscription and kind of window, and stores the window in the record
    itself, so the number of records does not grow with time.
    """

    async def update(self, partition: str, row: str, change: CounterChange) -> tuple[Counters, Counters]:
        """Apply `change` to the stored values ({} when absent) atomically, retrying on conflict.

        `change` is a pure function of the stored values: it may run more than
        once, and the values it was last given are the ones it was applied to.
        It returns the new values, or None to leave the record as it is.
        Returns (the values `change` was applied to, the values now stored).
        """
        ...

    async def read(self, partition: str, row: str) -> Counters: ...


# --- usage ledger -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageKey:
    """One ledger row: a subscription's use of one deployment, through one backend, in one UTC hour."""

    subscription_id: str
    hour: int  # epoch seconds at the start of the UTC hour
    deployment: str  # "" when the request named no deployment the gateway knows
    backend: str  # "" when no backend answered; "cache" for answers from the gateway's cache


@dataclass(frozen=True, slots=True)
class UsageCounts:
    """What a row adds up. `cached_tokens` were answered from the gateway's cache, not sent to a backend."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: Mapping[str, int] = field(default_factory=dict)  # by outcome (shared.outcomes.Outcome values)
    cost: float = 0.0  # from GATEWAY_PRICES at the time of the request
    subscription_name: str = ""  # the latest name seen, for reports

    def plus(self, other: UsageCounts) -> UsageCounts:
        requests = dict(self.requests)
        for outcome, count in other.requests.items():
            requests[outcome] = requests.get(outcome, 0) + count
        return UsageCounts(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            requests,
            self.cost + other.cost,
            other.subscription_name or self.subscription_name,
        )


@dataclass(frozen=True, slots=True)
class UsageBatch:
    """Counts one writer (a gateway instance) collected between two flushes.

    A writer numbers its batches 1, 2, 3, ... and hands them to the store one
    at a time, in order, retrying a batch until it is stored before the next.
    """

    writer: str
    sequence: int
    rows: Mapping[UsageKey, UsageCounts]


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: UsageKey
    counts: UsageCounts
    applied: Mapping[str, int]  # writer -> the last of its batch sequences counted in this row


class LedgerStore(Protocol):
    """Usage rows per (subscription, hour, deployment, backend), added to in idempotent batches."""

    async def apply(self, batch: UsageBatch) -> None:
        """Add each of the batch's counts to its row, unless the row already counted this batch.

        A row remembers the last sequence it counted per writer, so applying a
        batch again (a retry after a timeout that hid a success, or after only
        some partitions were written) counts nothing twice.
        """
        ...

    async def rows(self, start_hour: int, end_hour: int, subscription_id: str | None = None) -> list[UsageRow]:
        """Rows with start_hour <= hour < end_hour, of one subscription or of all."""
        ...


# --- the admin audit trail ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin change: who, what, when. Field names only: never a key, a hash or a value."""

    at: float  # epoch seconds
    actor: str  # "admin-key", "entra:<oid>", or "cli:<user>"
    action: str  # create | update | regenerate | delete
    route: str  # "PATCH /gateway/admin/subscriptions/sub-1", or the CLI command
    subscription_id: str
    fields: tuple[str, ...] = ()
    actor_name: str | None = None  # the token's display name or UPN, when it has one
    app_id: str | None = None  # the app the admin's token was issued to


class AuditStore(Protocol):
    """An append-only trail of admin changes, read newest first."""

    async def append(self, entry: AuditEntry) -> None: ...

    async def recent(self, limit: int, subscription_id: str | None = None) -> list[AuditEntry]:
        """Up to `limit` entries, newest first, of one subscription or of all."""
        ...


# ---- the semantic cache


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored answer. `key` is the exact-match key, unique within `scope`."""

    scope: str
    key: str
    prompt: str  # the lookup text, compared by the guard on a semantic match
    response: bytes  # a chat.completion JSON body
    prompt_tokens: int
    completion_tokens: int
    created_at: float  # epoch seconds
    expires_at: float

    @property
    def size(self) -> int:
        return len(self.response) + len(self.prompt.encode()) + len(self.scope) + len(self.key)


@dataclass(frozen=True, slots=True)
class Match:
    entry: CacheEntry
    similarity: float  # cosine similarity, 1.0 for the same direction


class VectorStore(Protocol):
    """Cache entries by scope, found by exact key or by nearest vector.

    Vectors are unit length. Expired entries (by the store's clock) are never
    returned. Failures raise `shared.errors.StoreUnavailable`.
    """

    kind: str

    async def get(self, scope: str, key: str) -> CacheEntry | None: ...

    async def nearest(self, scope: str, vector: Vector, min_similarity: float) -> Match | None:
        """The most similar unexpired entry in `scope`, if its similarity is at least `min_similarity`."""
        ...

    async def put(self, entry: CacheEntry, vector: Vector | None) -> None:
        """Store `entry`, replacing any with the same scope and key; without a vector it is found by key only."""
        ...

    async def delete(self, scope: str, key: str) -> bool: ...

    async def close(self) -> None: ...
