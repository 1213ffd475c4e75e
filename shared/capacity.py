"""The gateway's own limits on work in flight: slots per backend, streams and short calls apart.

A call takes a slot for its backend before anything is sent and holds it
until its backend connection is released (a stream: until it ends). Streams
and non-streamed calls draw from separate slot pools, so a backend's streams,
however many and however long, never hold up a short call to it. When a pool
is full, a call waits at most `wait_seconds` for a slot; then the gateway
sheds it with its own answer (`GatewayOverloaded`: 503, `gateway_overloaded`,
Retry-After). A timeout that fires while this worker's event loop is stalled
(`LoopWatch`) is ours too. Nothing here is a backend's doing: the proxy never
counts a `LocalLimit` toward a breaker or a throttle.

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

from shared.errors import GatewayException, GatewayOverloaded, retry_after_headers

# What a shed caller is told to wait: streams free slots every few seconds.
RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class CapacityPolicy:
    stream_slots: int = 1000  # GATEWAY_MAX_CONNECTIONS_PER_BACKEND
    unary_slots: int = 200  # GATEWAY_UNARY_CONNECTIONS_PER_BACKEND
    wait_seconds: float = 2.0  # GATEWAY_POOL_WAIT_SECONDS


class LocalLimit(GatewayException):
    """The gateway's own limit stopped an attempt; the proxy moves on without blaming the backend."""


class PoolFull(LocalLimit):
    """No slot came free in time."""

    def __init__(self, backend: str, stream: bool) -> None:
        super().__init__(f"{backend}: the gateway's {'stream' if stream else 'unary'} slots are all in use")


class LoopStalled(LocalLimit):
    """A timeout fired while this worker's event loop was stalled: the backend's answer may have been waiting unread.

    The loop runs due timers before it reads ready sockets, so after a long stall
    (a burst of work in one iteration) a connect or first-byte timeout fires even
    when the backend answered in time. That is our saturation, not the backend's.
    """

    def __init__(self, backend: str, outcome: str) -> None:
        super().__init__(f"{backend}: {outcome} while the gateway's event loop was stalled")


# The loop is looked at this often; a wake-up later than STALL_SECONDS is a stall.
WATCH_SECONDS = 0.25
STALL_SECONDS = 1.0


class LoopWatch:
    """How late the worker's event loop runs: a tick that wakes too late marks a stall."""

    def __init__(self, stall_seconds: float = STALL_SECONDS) -> None:
        self._stall_seconds = stall_seconds
        self._due: float | None = None
        self._last_stall = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._due = loop.time() + WATCH_SECONDS
            await asyncio.sleep(WATCH_SECONDS)
            if loop.time() - self._due > self._stall_seconds:
                self._last_stall = loop.time()

    def stalled_since(self, since: float) -> bool:
        """Whether the loop stalled after `since` (loop time), or is stalled now (its tick is overdue)."""
        now = asyncio.get_running_loop().time()
        overdue = self._due is not None and now - self._due > self._stall_seconds
        return overdue or self._last_stall >= since

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


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
        self.loop = LoopWatch()

    def pool(self, backend: str, stream: bool) -> Slots:
        key = (backend, stream)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Slots(self.policy.stream_slots if stream else self.policy.unary_slots)
        return pool

    async def acquire(self, backend: str, stream: bool) -> Callable[[], None]:
        """A slot for one call to `backend`; returns its release (call it once). Raises `PoolFull`."""
        self.loop.start()
        pool = self.pool(backend, stream)
        if not await pool.acquire(self.policy.wait_seconds):
            raise PoolFull(backend, stream)
        return _Release(pool)

    async def close(self) -> None:
        await self.loop.close()

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
