"""The small async protocols every kind of shared state sits behind.

Each protocol has two implementations: Azure (`stores/tables.py`, `stores/cosmos.py`)
and embedded (`stores/embedded.py`, in-process). `stores/factory.py` picks one
from configuration. Implementations raise `shared.errors.StoreUnavailable`
when the backing service cannot be reached, and nothing else of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from shared.models import Subscription

T = TypeVar("T")


class SubscriptionStore(Protocol):
    async def get(self, subscription_id: str) -> Subscription | None: ...

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None: ...

    async def create(self, subscription: Subscription) -> None:
        """Store a new subscription; `ValueError` if the id exists."""
        ...

    async def modify(self, subscription_id: str, change: Callable[[Subscription], Subscription]) -> Subscription | None:
        """Read-modify-write with compare-and-swap (retried on conflict); None if absent."""
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


class CounterStore(Protocol):
    """Shared counters in fixed windows, the basis of token and request limits."""

    async def take(self, key: str, window: int, amount: int, cap: int, ttl_seconds: float) -> tuple[int, int]:
        """Atomically add up to `amount` to counter (key, window) without passing `cap`.

        A negative amount gives back (the counter never goes below zero).
        Returns (the amount applied, the counter's new value).
        """
        ...

    async def read(self, key: str, window: int) -> int: ...
