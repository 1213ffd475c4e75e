"""The gateway's own limits on work in flight: slots per backend, streams and short calls apart.

A call takes a slot for its backend before anything is sent and holds it
until its backend connection is released (a stream: until it ends). Streams
and non-streamed calls draw from separate slot pools, so a backend's streams,
however many and however long, never hold up a short call to it. When a pool
is full, a call waits at most `wait_seconds` for a slot; then the gateway
sheds it with its own answer (`GatewayOverloaded`: 503, `gateway_overloaded`,
Retry-After). Nothing here is a backend's doing: the proxy never counts a full
pool toward a breaker or a throttle.

The aiohttp connector itself is left unlimited (`Gateway.session`), so its
`connect` timeout measures only connecting, never a wait for a pooled
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import GatewayOverloaded, retry_after_headers

# What a shed caller is told to wait: streams free slots every few seconds.
RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class CapacityPolicy:
    stream_slots: int = 1000  # GATEWAY_MAX_CONNECTIONS_PER_BACKEND
    unary_slots: int = 200  # GATEWAY_UNARY_CONNECTIONS_PER_BACKEND
    wait_seconds: float = 2.0  # GATEWAY_POOL_WAIT_SECONDS


class PoolFull(Exception):
    """No slot came free in time; the proxy moves on without blaming the backend."""

    def __init__(self, backend: str, stream: bool) -> None:
        super().__init__(f"{backend}: the gateway's {'stream' if stream else 'unary'} slots are all in use")
        self.backend = backend


class Slots:
    """A counted pool with a first-come queue; a waiter that gives up (timeout, cancellation) leaves no trace."""

    __slots__ = ("_free", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        return self.limit - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, seconds: float) -> bool:
        """Take a slot, waiting up to `seconds`; False if none came free."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        if seconds <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                await waiter
        except TimeoutError:
            return self._give_up(waiter)
        except asyncio.CancelledError:
            self._give_up(waiter)
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            raise
        return True

    def _give_up(self, waiter: asyncio.Future[None]) -> bool:
        if waiter.done() and not waiter.cancelled():
            return True  # the slot arrived with the timeout: keep it
        waiter.cancel()
        with contextlib.suppress(ValueError):  # already popped by a release that found it cancelled
            self._waiters.remove(waiter)
        return False

    def release(self) -> None:
        """Give a slot back: to the longest waiter still waiting, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free = min(self.limit, self._free + 1)


class Capacity:
    """This instance's slots, per backend and kind of call."""

    def __init__(self, policy: CapacityPolicy) -> None:
        self.policy = policy
        self._pools: dict[tuple[str, bool], Slots] = {}

    def pool(self, backend: str, stream: bool) -> Slots:
        key = (backend, stream)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Slots(self.policy.stream_slots if stream else self.policy.unary_slots)
        return pool

    async def acquire(self, backend: str, stream: bool) -> Callable[[], None]:
        """A slot for one call to `backend`; returns its release (call it once). Raises `PoolFull`."""
        pool = self.pool(backend, stream)
        if not await pool.acquire(self.policy.wait_seconds):
            raise PoolFull(backend, stream)
        return _Release(pool)

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            f"{backend}/{'stream' if stream else 'unary'}": {
                "limit": pool.limit,
                "in_use": pool.in_use,
                "waiting": pool.waiting,
            }
            for (backend, stream), pool in sorted(self._pools.items())
        }


class _Release:
    """Gives its slot back once, however many times it is called (a stream ends by several paths)."""

    __slots__ = ("_pool",)

    def __init__(self, pool: Slots) -> None:
        self._pool: Slots | None = pool

    def __call__(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.release()


def overloaded(deployment: str) -> GatewayOverloaded:
    """The gateway's own answer when it sheds a call: 503 with Retry-After, before any backend was asked."""
    return GatewayOverloaded(
        f"The gateway is at its capacity for deployment '{deployment}'; retry after {RETRY_AFTER_SECONDS:g} s.",
        headers=retry_after_headers(RETRY_AFTER_SECONDS),
    )
