"""The circuit breaker per (backend, deployment): a pure state machine, and the board that shares it.

State machine (functions of state, policy and time; no I/O):

    CLOSED --rate: >= failure_rate of >= min_requests in the window failed--> OPEN (until now + max(trip, Retry-After))
    CLOSED --count: N counted failures within interval-----------------------> OPEN
    OPEN --time passes, one instance claims the trial--> HALF_OPEN (trial leased to that instance)
    HALF_OPEN --trial succeeds--> CLOSED      HALF_OPEN --trial fails--> OPEN
    HALF_OPEN --trial lease expires unreported--> another instance may claim it

The rate rule's window is kept in the record as `BUCKETS` time buckets of
(requests, failures), so a shared record stays small whatever the traffic.
Which failures are counted at all (the backend's fault, not the request's) is
decided by `shared.blame`; this module only counts what it is told.

`BreakerBoard` keeps a local copy of every breaker, refreshed from the shared
`BreakerStore` at most every `sync_seconds` (so the hot path does no storage
I/O), and writes transitions with compare-and-swap. Successes are tallied in
memory and written only with this instance's next failure, or at a refresh
that finds failures in the shared window: a healthy pool costs no writes, and
a failing one sees every instance's successes within one refresh. When the
store fails, the board carries on with local state and says so once in the log.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial

from shared.backendconfig import BreakerPolicy
from shared.clock import Clock
from shared.errors import StoreUnavailable
from shared.stores.protocols import BreakerStore

log = logging.getLogger("gateway.breaker")

Change = Callable[["BreakerState"], "BreakerState | None"]
Bucket = tuple[float, int, int]  # (start, requests, failures) of one slice of the rate window

BUCKETS = 10


class Status(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerState:
    status: Status = Status.CLOSED
    failures: tuple[float, ...] = ()  # times of counted failures within the interval
    open_until: float = 0.0
    trial_owner: str | None = None
    trial_until: float = 0.0
    trips: int = 0
    reason: str = ""
    window: tuple[Bucket, ...] = ()  # the rate rule's counts, oldest bucket first

    def to_record(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "failures": list(self.failures),
            "open_until": self.open_until,
            "trial_owner": self.trial_owner or "",
            "trial_until": self.trial_until,
            "trips": self.trips,
            "reason": self.reason,
            "window": [list(b) for b in self.window],
        }

    @classmethod
    def from_record(cls, rec: dict[str, object]) -> BreakerState:
        failures = rec.get("failures", [])
        window = rec.get("window", [])
        return cls(
            status=Status(str(rec.get("status", "closed"))),
            failures=tuple(float(f) for f in failures) if isinstance(failures, list) else (),
            open_until=float(rec.get("open_until", 0.0)),  # type: ignore[arg-type]  # stored as a number
            trial_owner=str(rec.get("trial_owner") or "") or None,
            trial_until=float(rec.get("trial_until", 0.0)),  # type: ignore[arg-type]
            trips=int(rec.get("trips", 0)),  # type: ignore[call-overload]
            reason=str(rec.get("reason", "")),
            window=tuple((float(b[0]), int(b[1]), int(b[2])) for b in window) if isinstance(window, list) else (),
        )


# --- the pure state machine -------------------------------------------------------------------


def available(state: BreakerState, now: float, instance: str) -> bool:
    """Whether a request may go now without changing state (closed, or our own live trial)."""
    if state.status is Status.CLOSED:
        return True
    if state.status is Status.HALF_OPEN:
        return state.trial_owner == instance and now < state.trial_until
    return False


def claim_trial(policy: BreakerPolicy, state: BreakerState, now: float, instance: str) -> BreakerState | None:
    """The half-open state with `instance` holding the single trial, or None if no trial is due."""
    due = (state.status is Status.OPEN and now >= state.open_until) or (
        state.status is Status.HALF_OPEN and now >= state.trial_until
    )
    if not due:
        return None
    return replace(state, status=Status.HALF_OPEN, trial_owner=instance, trial_until=now + policy.trial_timeout_seconds)


def _width(policy: BreakerPolicy) -> float:
    return policy.window_seconds / BUCKETS


def bucket_of(policy: BreakerPolicy, now: float) -> float:
    """The start of the window bucket `now` falls in (the same float on every instance)."""
    width = _width(policy)
    return math.floor(now / width) * width


def _oldest_live(policy: BreakerPolicy, now: float) -> float:
    return bucket_of(policy, now) - (BUCKETS - 1) * _width(policy)


def add_counts(
    policy: BreakerPolicy, window: tuple[Bucket, ...], now: float, counts: Iterable[Bucket]
) -> tuple[Bucket, ...]:
    """`window` with `counts` added bucket by bucket, buckets older than the window dropped."""
    oldest = _oldest_live(policy, now)
    merged: dict[float, tuple[int, int]] = {}
    for start, requests, failures in (*window, *counts):
        if start < oldest:
            continue
        had = merged.get(start, (0, 0))
        merged[start] = (had[0] + requests, had[1] + failures)
    return tuple((start, r, f) for start, (r, f) in sorted(merged.items()))


def window_totals(policy: BreakerPolicy, window: tuple[Bucket, ...], now: float) -> tuple[int, int]:
    """(requests, failures) counted within the window that ends now."""
    oldest = _oldest_live(policy, now)
    live = [b for b in window if b[0] >= oldest]
    return sum(b[1] for b in live), sum(b[2] for b in live)


def _over_rate(policy: BreakerPolicy, requests: int, failures: int) -> bool:
    return requests >= policy.min_requests and failures >= policy.failure_rate * requests


def record_failure(
    policy: BreakerPolicy,
    state: BreakerState,
    now: float,
    *,
    retry_after: float | None,
    reason: str,
    counts: Iterable[Bucket] = (),
) -> BreakerState:
    """One counted failure, with `counts` (this instance's tallies not yet shared) added to the rate window."""
    hold = policy.trip_seconds
    if policy.accept_retry_after and retry_after:
        hold = max(hold, retry_after)
    if state.status is Status.HALF_OPEN:
        return BreakerState(Status.OPEN, (), now + hold, None, 0.0, state.trips + 1, f"trial failed: {reason}")
    if state.status is Status.OPEN:
        return state
    if policy.mode == "rate":
        window = add_counts(policy, state.window, now, (*counts, (bucket_of(policy, now), 1, 1)))
        requests, failures = window_totals(policy, window, now)
        if _over_rate(policy, requests, failures):
            why = f"{reason} ({failures} of {requests} requests failed within {policy.window_seconds:g} s)"
            return BreakerState(Status.OPEN, (), now + hold, None, 0.0, state.trips + 1, why)
        return replace(state, window=window)
    failures_at = (*tuple(t for t in state.failures if t > now - policy.interval_seconds), now)
    if len(failures_at) >= policy.failures:
        return BreakerState(Status.OPEN, (), now + hold, None, 0.0, state.trips + 1, reason)
    return replace(state, failures=failures_at)


def record_counts(
    policy: BreakerPolicy, state: BreakerState, now: float, counts: Iterable[Bucket]
) -> BreakerState | None:
    """A closed breaker's window with another instance's tallies added (None: nothing to write)."""
    if state.status is not Status.CLOSED or policy.mode != "rate":
        return None
    window = add_counts(policy, state.window, now, counts)
    return None if window == state.window else replace(state, window=window)


def failing(policy: BreakerPolicy, state: BreakerState, now: float) -> bool:
    """Whether the shared window holds failures (then this instance's successes are worth writing)."""
    return policy.mode == "rate" and window_totals(policy, state.window, now)[1] > 0


def record_success(state: BreakerState) -> BreakerState:
    if state.status is Status.HALF_OPEN:
        return BreakerState(trips=state.trips)
    return state


def force_open(policy: BreakerPolicy, state: BreakerState, now: float, reason: str) -> BreakerState:
    """Open at once (the health probe found the backend down)."""
    if state.status is Status.OPEN and state.open_until > now:
        return state
    return BreakerState(Status.OPEN, (), now + policy.trip_seconds, None, 0.0, state.trips + 1, reason)


# --- the shared board -------------------------------------------------------------------------


class BreakerBoard:
    def __init__(
        self,
        policy: BreakerPolicy,
        store: BreakerStore,
        clock: Clock,
        instance: str,
        *,
        sync_seconds: float = 2.0,
    ) -> None:
        self.policy = policy
        self._store = store
        self._clock = clock
        self.instance = instance
        self._sync_seconds = sync_seconds
        self._local: dict[str, BreakerState] = {}
        self._etags: dict[str, str | None] = {}
        self._synced_at = float("-inf")
        self._sync_task: asyncio.Task[None] | None = None
        self.store_healthy = True
        # Drained by telemetry; bounded so a gateway without telemetry does not grow it forever.
        self.transitions: deque[tuple[str, Status, Status]] = deque(maxlen=1000)
        self._trials: dict[str, float] = {}  # key -> lease end of the trial this instance has sent
        # key -> bucket start -> [requests, failures] counted here and not yet written to the shared record.
        self._tallies: dict[str, dict[float, list[int]]] = {}

    @staticmethod
    def key(backend: str, deployment: str) -> str:
        return f"{backend}|{deployment}"

    def state(self, key: str) -> BreakerState:
        return self._local.get(key, BreakerState())

    def snapshot(self) -> dict[str, BreakerState]:
        return dict(self._local)

    def reopens_in(self, key: str) -> float | None:
        """Seconds until this breaker lets a request through again (None: it does now, or no time is known)."""
        state, now = self.state(key), self._clock.now()
        if state.status is Status.OPEN:
            return max(0.0, state.open_until - now)
        if state.status is Status.HALF_OPEN and state.trial_owner != self.instance:
            return max(0.0, state.trial_until - now)
        return None

    def _tally(self, key: str, *, failed: bool) -> None:
        now = self._clock.now()
        tallies = self._tallies.setdefault(key, {})
        counts = tallies.setdefault(bucket_of(self.policy, now), [0, 0])
        counts[0] += 1
        counts[1] += int(failed)
        if len(tallies) > BUCKETS:  # drop what has left the window, so an idle instance holds nothing old
            oldest = min(tallies)
            del tallies[oldest]

    def _take_tallies(self, key: str) -> tuple[Bucket, ...]:
        return tuple((start, c[0], c[1]) for start, c in sorted(self._tallies.pop(key, {}).items()))

    def _note(self, key: str, old: BreakerState, new: BreakerState) -> None:
        if old.status is not new.status:
            self.transitions.append((key, old.status, new.status))
            log.warning("breaker %s: %s -> %s (%s)", key, old.status.value, new.status.value, new.reason or "ok")
        self._local[key] = new

    def _store_failed(self, exc: Exception) -> None:
        if self.store_healthy:
            log.warning("breaker store unavailable, using local breaker state: %s", exc)
        self.store_healthy = False

    def _store_ok(self) -> None:
        if not self.store_healthy:
            log.warning("breaker store reachable again, sharing breaker state")
        self.store_healthy = True

    # Refresh: at most one in flight, never awaited on the request path.
    def maybe_sync(self) -> None:
        now = self._clock.now()
        if now - self._synced_at < self._sync_seconds or (self._sync_task and not self._sync_task.done()):
            return
        self._synced_at = now
        self._sync_task = asyncio.get_running_loop().create_task(self.sync())

    async def sync(self) -> None:
        try:
            records = await self._store.load_all()
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return
        self._store_ok()
        self._synced_at = self._clock.now()
        for key, versioned in records.items():
            self._note(key, self.state(key), BreakerState.from_record(versioned.value))
            self._etags[key] = versioned.etag
        await self._share_tallies()

    async def _share_tallies(self) -> None:
        """Write this instance's successes where the shared window holds failures, so the rate is everyone's."""
        now = self._clock.now()
        for key in [k for k in self._tallies if failing(self.policy, self.state(k), now)]:
            counts = self._take_tallies(key)
            await self._transition(key, partial(record_counts, self.policy, now=now, counts=counts))

    async def allow(self, key: str) -> bool:
        """Whether a request may go to this breaker's backend now; may claim the half-open trial."""
        self.maybe_sync()
        now = self._clock.now()
        state = self.state(key)
        if state.status is Status.CLOSED:
            return True
        if available(state, now, self.instance):
            return self._take_trial(key, state)
        if claim_trial(self.policy, state, now, self.instance) is None:
            return False
        claimed = await self._transition(key, lambda s: claim_trial(self.policy, s, now, self.instance))
        return claimed is not None and available(claimed, now, self.instance) and self._take_trial(key, claimed)

    def _take_trial(self, key: str, state: BreakerState) -> bool:
        """One request per trial lease: the instance holding the trial sends exactly one until it is reported."""
        if self._trials.get(key) == state.trial_until:
            return False
        self._trials[key] = state.trial_until
        return True

    async def failure(self, key: str, *, retry_after: float | None, reason: str) -> None:
        """A failure that is the backend's fault (`shared.blame` decides which are)."""
        self._trials.pop(key, None)
        now = self._clock.now()
        counts = self._take_tallies(key)
        await self._transition(
            key,
            lambda s: record_failure(self.policy, s, now, retry_after=retry_after, reason=reason, counts=counts),
        )

    async def success(self, key: str) -> None:
        self._trials.pop(key, None)
        state = self.state(key)
        if state.status is Status.CLOSED:
            if self.policy.mode == "rate":
                self._tally(key, failed=False)  # in memory: shared with the next failure or refresh
            return  # count mode: failures age out of the interval by themselves
        await self._transition(key, record_success)

    async def open(self, key: str, reason: str) -> None:
        now = self._clock.now()
        await self._transition(key, lambda s: force_open(self.policy, s, now, reason))

    async def close(self, key: str) -> None:
        """Close a breaker whose backend answers again (the probe, after the trip duration)."""
        now = self._clock.now()

        def closing(s: BreakerState) -> BreakerState | None:
            if s.status is Status.CLOSED or s.open_until > now:
                return None
            return BreakerState(trips=s.trips)

        await self._transition(key, closing)

    async def _transition(self, key: str, change: Change) -> BreakerState | None:
        """Apply `change` (state -> new state or None for no change) with compare-and-swap, retrying conflicts."""
        if not self.store_healthy and self._clock.now() - self._synced_at < self._sync_seconds:
            return self._apply_local(key, change)
        for _ in range(8):
            try:
                current = await self._store.load(key)
            except StoreUnavailable as exc:
                self._store_failed(exc)
                self._synced_at = self._clock.now()
                return self._apply_local(key, change)
            self._store_ok()
            base = BreakerState.from_record(current.value) if current.value is not None else BreakerState()
            self._note(key, self.state(key), base)
            new = change(base)
            if new is None:
                return None
            try:
                etag = await self._store.save(key, new.to_record(), current.etag)
            except StoreUnavailable as exc:
                self._store_failed(exc)
                return self._apply_local(key, change)
            if etag is not None:
                self._etags[key] = etag
                self._note(key, base, new)
                return new
        log.warning("breaker %s: gave up after repeated write conflicts", key)
        return None

    def _apply_local(self, key: str, change: Change) -> BreakerState | None:
        current = self.state(key)
        new = change(current)
        if new is not None:
            self._note(key, current, new)
        return new
