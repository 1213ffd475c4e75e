"""The leased limiter: `SharedLimiter` reserves before a call and settles after it; `NoLimits` when none apply.

How leases are taken, sized and given back, and the bound they keep, is
drawn in the package docstring (`shared/limits/__init__.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol

from shared.clock import Clock
from shared.errors import (
    GatewayError,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    StoreUnavailable,
    retry_after_headers,
)
from shared.limits import headers as answers
from shared.limits.estimate import Estimator, estimate_call
from shared.limits.lease import Bucket, Caps, LeaseAsk, LeaseOutcome, LocalRecords, decide_lease, give_back, rate_caps
from shared.limits.users import user_caller, user_headers
from shared.limits.windows import Window, quota_window, rate_window
from shared.models import Caller, QuotaPeriod
from shared.stores.protocols import Counters, CounterStore

if TYPE_CHECKING:
    from shared.api import ApiCall

log = logging.getLogger("gateway.limits")

RATE_ROW, QUOTA_ROW = "rate", "quota"
OUTAGE_RETRY_SECONDS = 5.0
SWEEP_SECONDS = 1.0  # how often (real time) idle leases are looked for while any is held
_MAX_BUCKETS = 50_000


@dataclass(slots=True)
class Admission:
    """A reservation made before the call; settled exactly once after it."""

    caller: Caller
    reserved_tokens: int
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False
    # The prompt part of the estimate (set when the caller has limits or the call streams): what to
    # charge, with the tokens already streamed, when a stream is cut before its usage chunk.
    prompt_estimate: int = 0
    rate_window: int | None = None  # start of the rate window the reservation was taken in
    quota_window: int | None = None
    user: Admission | None = None  # the end user's own reservation, when the subscription has per-user limits


@dataclass(slots=True)
class LimiterStats:
    admitted: int = 0
    rate_limited: int = 0
    quota_exceeded: int = 0
    leases: int = 0  # writes to the shared record that granted capacity
    refused_leases: int = 0  # asks the shared record could not grant
    returned_leases: int = 0
    local_leases: int = 0  # granted from this instance's own view while storage was unavailable
    store_failures: int = 0
    shared: bool = True  # false while limits are enforced per instance
    # Every admission handed out and every one settled: equal whenever no request is in flight, which is
    # how tests (and an operator, in /gateway/admin/stats) see that no path leaves a reservation open.
    reservations: int = 0
    settlements: int = 0


class Limiter(Protocol):
    async def admit(self, caller: Caller, call: ApiCall) -> Admission:
        """Reserve the call's estimated tokens and one request; raise `RateLimited` (429) or `QuotaExceeded` (403)."""
        ...

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        """Replace the reservation by what was really used (0 refunds it all). Idempotent: settles once."""
        ...

    def stats(self) -> dict[str, object]: ...


class NoLimits:
    def __init__(self) -> None:
        self.counters = LimiterStats()

    async def admit(self, caller: Caller, call: ApiCall) -> Admission:
        self.counters.reservations += 1
        return Admission(caller, 0)

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        if not admission.settled:
            self.counters.settlements += 1
        admission.settled = True

    def stats(self) -> dict[str, object]:
        c = self.counters
        return {"kind": "none", "open_reservations": c.reservations - c.settlements}


def _short_of(bucket: Bucket | None, tokens: int, requests: int) -> Bucket | None:
    """The bucket if its lease cannot cover this reservation."""
    if bucket is not None and bucket.short_of(tokens, requests):
        return bucket
    return None


class SharedLimiter:
    """Limits shared through a `CounterStore` by leases; see the module docstring for the design and its bound."""

    def __init__(
        self,
        store: CounterStore,
        clock: Clock,
        *,
        window_seconds: int = 60,
        default_completion_tokens: int = 1024,
        fail_closed: bool = False,
        estimator: Estimator = estimate_call,
    ) -> None:
        if window_seconds < 1 or 60 % window_seconds:
            raise ValueError("the rate window must divide a minute (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60 s)")
        self._store = store
        self._clock = clock
        self._window_seconds = window_seconds
        self._default_completion = default_completion_tokens
        self._fail_closed = fail_closed
        self._estimate = estimator
        # Per-instance stand-in for the shared records while storage is unavailable.
        self._fallback = LocalRecords()
        self._outage_until = 0.0
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._quota_windows: dict[QuotaPeriod, Window] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[int]] = set()
        self.counters = LimiterStats()

    # --- the two calls the pipeline makes -------------------------------------------------------

    async def admit(self, caller: Caller, call: ApiCall) -> Admission:
        user = user_caller(caller)
        if user is None:
            return await self._admit(caller, call)
        # The end user first: user limits count no requests, so a refund is exact when the subscription refuses.
        try:
            held = await self._admit(user, call)
        except (RateLimited, QuotaExceeded) as exc:
            exc.message = exc.message.replace("This subscription has", "This end user has", 1)
            raise
        try:
            admission = await self._admit(caller, call)
        except GatewayError:
            await self.settle(held, 0)
            raise
        admission.user = held
        admission.headers.update(user_headers(held.headers))
        return admission

    async def _admit(self, caller: Caller, call: ApiCall) -> Admission:
        limits = caller.limits
        has_rate = limits.tokens_per_minute is not None or limits.requests_per_minute is not None
        period = limits.token_quota_period if limits.token_quota is not None else None
        if not has_rate and period is None:
            # Nothing to enforce: count the prompt only where a cut stream may need it charged.
            prompt = self._estimate(call, self._default_completion).prompt if call.stream else 0
            self.counters.reservations += 1
            return Admission(caller, 0, prompt_estimate=prompt)
        estimate = self._estimate(call, self._default_completion)
        tokens = estimate.total
        now = self._clock.now()
        rate = quota = None
        if has_rate:
            caps = rate_caps(limits, self._window_seconds)
            rate = self._bucket(caller.subscription_id, RATE_ROW, rate_window(now, self._window_seconds), caps)
            if caps.tokens is not None and tokens > caps.tokens:
                self.counters.rate_limited += 1
                raise answers.too_large(limits, rate, tokens, self._clock.now())
        if period is not None:
            quota_caps = Caps(limits.token_quota, None)
            quota = self._bucket(caller.subscription_id, QUOTA_ROW, self._quota_window(now, period), quota_caps)
        rate_tokens = tokens if rate is not None and rate.caps.tokens is not None else 0
        rate_requests = 1 if rate is not None and rate.caps.requests is not None else 0
        needs = {QUOTA_ROW: (tokens, 0), RATE_ROW: (rate_tokens, rate_requests)}
        attempts = 0
        # A lease just taken can be spent by concurrent requests before this one reserves: look again.
        while (short := _short_of(quota, tokens, 0) or _short_of(rate, rate_tokens, rate_requests)) is not None:
            attempts += 1
            if attempts > 4 or not await self._refill(short, *needs[short.row]):
                if short.row == QUOTA_ROW:
                    self.counters.quota_exceeded += 1
                    raise answers.quota_exceeded(limits, short, rate, tokens, self._clock.now())
                self.counters.rate_limited += 1
                raise answers.rate_limited(limits, short, quota, self._clock.now())
        now = self._clock.now()
        for bucket, bucket_tokens, bucket_requests in ((rate, rate_tokens, rate_requests), (quota, tokens, 0)):
            if bucket is not None:
                bucket.take(bucket_tokens, bucket_requests)
        self.counters.admitted += 1
        self.counters.reservations += 1
        return Admission(
            caller,
            tokens,
            answers.limit_headers(limits, rate, quota, self._clock.now()),
            prompt_estimate=estimate.prompt,
            rate_window=rate.window.start if rate else None,
            quota_window=quota.window.start if quota else None,
        )

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        if admission.settled:
            return
        admission.settled = True
        self.counters.settlements += 1
        if admission.user is not None:
            await self.settle(admission.user, used_tokens)
        delta = used_tokens - admission.reserved_tokens
        if delta == 0:
            return
        now = self._clock.now()
        subscription = admission.caller.subscription_id
        for row, window in ((RATE_ROW, admission.rate_window), (QUOTA_ROW, admission.quota_window)):
            bucket = self._buckets.get((subscription, row))
            if window is None or bucket is None or bucket.caps.tokens is None:
                continue
            if bucket.window.start == window and now < bucket.window.end:
                bucket.adjust(delta)
            elif delta > 0:
                # Tokens used beyond the reservation of a closed window count in the current one;
                # a refund for a closed window has nothing left to go back to.
                period = admission.caller.limits.token_quota_period
                if row == RATE_ROW:
                    bucket.roll(rate_window(now, self._window_seconds))
                elif period is not None:
                    bucket.roll(self._quota_window(now, period))
                bucket.adjust(delta)

    async def remaining(self, caller: Caller) -> dict[str, int | None]:
        """What is left of the caller's limits now (None: not set), from the shared records plus this instance's lease.

        One read per record: this serves `GET /usage`, not the request path.
        """
        limits = caller.limits
        now = self._clock.now()
        result: dict[str, int | None] = {"tokens_per_minute": None, "requests_per_minute": None, "token_quota": None}
        wanted: list[tuple[str, str, int, int | None]] = []
        if limits.tokens_per_minute is not None or limits.requests_per_minute is not None:
            caps = rate_caps(limits, self._window_seconds)
            start = rate_window(now, self._window_seconds).start
            wanted += [
                ("tokens_per_minute", RATE_ROW, start, caps.tokens),
                ("requests_per_minute", RATE_ROW, start, caps.requests),
            ]
        if limits.token_quota is not None and limits.token_quota_period is not None:
            wanted.append(
                ("token_quota", QUOTA_ROW, self._quota_window(now, limits.token_quota_period).start, limits.token_quota)
            )
        records: dict[str, Mapping[str, int]] = {}
        for name, row, start, cap in wanted:
            if cap is None:
                continue
            if row not in records:
                try:
                    records[row] = await self._store.read(caller.subscription_id, row)
                except StoreUnavailable:
                    records[row] = {}
            record = records[row]
            field_name = "requests" if name == "requests_per_minute" else "tokens"
            used = int(record.get(field_name, 0)) if record.get("window") == start else 0
            bucket = self._buckets.get((caller.subscription_id, row))
            held = 0
            if bucket is not None and bucket.window.start == start:
                held = bucket.requests if field_name == "requests" else bucket.tokens
            result[name] = max(0, min(cap, cap - used + max(0, held)))
        return result

    def stats(self) -> dict[str, object]:
        c = self.counters
        return {
            "kind": "shared",
            "window_seconds": self._window_seconds,
            "shared": c.shared,
            "admitted": c.admitted,
            "rate_limited": c.rate_limited,
            "quota_exceeded": c.quota_exceeded,
            "leases": c.leases,
            "refused_leases": c.refused_leases,
            "returned_leases": c.returned_leases,
            "local_leases": c.local_leases,
            "store_failures": c.store_failures,
            "open_reservations": c.reservations - c.settlements,
        }

    # --- leases ----------------------------------------------------------------------------------

    def _bucket(self, subscription: str, row: str, window: Window, caps: Caps) -> Bucket:
        key = (subscription, row)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                now = self._clock.now()
                self._buckets = {k: b for k, b in self._buckets.items() if b.window.end > now or b.lock.locked()}
            bucket = self._buckets[key] = Bucket(subscription, row)
        bucket.roll(window)
        bucket.last_asked = self._clock.now()
        if caps != bucket.caps:  # limits may change (admin PATCH) while a window runs: look at the record again
            bucket.clamp(caps)  # a lower limit applies to the lease already held, not from the next window
            bucket.caps = caps
            bucket.exhausted_until = 0.0
        return bucket

    def _quota_window(self, now: float, period: QuotaPeriod) -> Window:
        window = self._quota_windows.get(period)
        if window is None or not window.start <= now < window.end:
            window = self._quota_windows[period] = quota_window(now, period)
        return window

    async def _refill(self, bucket: Bucket, tokens: int, requests: int) -> bool:
        """Lease enough that `tokens` and `requests` can be reserved; False if the record cannot grant it."""
        async with bucket.lock:
            if bucket.tokens >= tokens and bucket.requests >= requests:
                return True  # a concurrent request refilled it while this one waited
            now = self._clock.now()
            if now < bucket.exhausted_until:
                return False
            ask = bucket.ask(max(0, tokens - bucket.tokens), max(0, requests - bucket.requests), now)
            outcome, shared = await self._lease(bucket, ask)
            if outcome.stale:
                return False  # the next request, a moment later by this clock, is in the record's window
            bucket.tokens += outcome.tokens
            bucket.requests += outcome.requests
            bucket.seen_tokens, bucket.seen_requests = outcome.total_tokens, outcome.total_requests
            bucket.leased_at = now
            bucket.spent_tokens = bucket.spent_requests = 0
            if shared:
                bucket.owed_tokens = bucket.owed_requests = 0  # charged by this write
            else:
                bucket.owed_tokens += outcome.tokens  # to be charged when storage answers again
                bucket.owed_requests += outcome.requests
            bucket.short = outcome.short
            if outcome.short:
                self.counters.refused_leases += 1
                bucket.exhausted_until = now + min(bucket.window.seconds / 4, 60.0)
                return False
            self.counters.leases += 1
            self._schedule_sweep()
            return True

    async def _lease(self, bucket: Bucket, ask: LeaseAsk) -> tuple[LeaseOutcome, bool]:
        """Lease from the shared record, or from this instance's own view of it while storage is unavailable."""
        now = self._clock.now()
        if now >= self._outage_until:
            try:
                before, _ = await self._store.update(bucket.partition, bucket.row, lambda s: decide_lease(s, ask)[0])
            except StoreUnavailable as exc:
                self._storage_down(exc, now)
            else:
                self._storage_up()
                return decide_lease(before, ask)[1], True
        if self._fail_closed:
            raise ServiceUnavailable(
                "Token limits cannot be checked right now (storage is unavailable); retry shortly.",
                code="limits_unavailable",
                headers=retry_after_headers(max(1.0, self._outage_until - now)),
            )
        # The local record starts from what this instance last saw of the shared one, its own debts included.
        seed = {
            "window": ask.window,
            "tokens": bucket.seen_tokens + bucket.owed_tokens,
            "requests": bucket.seen_requests + bucket.owed_requests,
        }
        local_ask = LeaseAsk(
            ask.window, ask.caps, ask.need_tokens, ask.need_requests, ask.want_tokens, ask.want_requests
        )

        def local_base(stored: Counters) -> Counters:
            return stored if stored.get("window") == ask.window else seed

        before = self._fallback.update(
            bucket.partition, bucket.row, lambda s: decide_lease(local_base(s), local_ask)[0]
        )
        self.counters.local_leases += 1
        return decide_lease(local_base(before), local_ask)[1], False

    def _storage_down(self, exc: StoreUnavailable, now: float) -> None:
        self.counters.store_failures += 1
        self._outage_until = now + OUTAGE_RETRY_SECONDS
        if self.counters.shared:
            action = "refusing requests that need a new lease" if self._fail_closed else "enforcing limits per instance"
            log.warning("limit counters unavailable (%s): %s until storage answers again", exc, action)
        self.counters.shared = False

    def _storage_up(self) -> None:
        if not self.counters.shared:
            log.warning("limit counters reachable again: limits are shared across instances again")
        self.counters.shared = True

    # --- giving idle leases back -------------------------------------------------------------------

    def _schedule_sweep(self) -> None:
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._on_sweep)

    def _on_sweep(self) -> None:
        # A timer handle rather than a long-lived task: nothing is left pending when the loop closes.
        self._sweep = None
        now = self._clock.now()
        if not any(
            b.window.end > now and (b.tokens > 0 or b.requests > 0 or b.owed_tokens or b.owed_requests)
            for b in self._buckets.values()
        ):
            return
        task = asyncio.get_running_loop().create_task(self.give_back_idle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._schedule_sweep()

    async def give_back_idle(self) -> int:
        """Settle buckets unused for a quarter of their window (at most 60 s) with the shared record.

        What they hold goes back, what they owe is charged; returns how many buckets did so.
        """
        returned = 0
        now = self._clock.now()
        for bucket in list(self._buckets.values()):
            held_tokens, held_requests = max(bucket.tokens, 0), max(bucket.requests, 0)
            if (
                bucket.window.end <= now
                or not (held_tokens or held_requests or bucket.owed_tokens or bucket.owed_requests)
                or now - bucket.last_asked < min(bucket.window.seconds / 4, 60.0)
                or bucket.lock.locked()
                or now < self._outage_until
            ):
                continue
            async with bucket.lock:
                window = bucket.window.start
                owed_tokens, owed_requests = bucket.owed_tokens, bucket.owed_requests
                change = partial(
                    give_back, window=window, tokens=held_tokens - owed_tokens, requests=held_requests - owed_requests
                )
                try:
                    _, after = await self._store.update(bucket.partition, bucket.row, change)
                except StoreUnavailable as exc:
                    self._storage_down(exc, now)
                    continue
                if bucket.window.start != window:
                    continue
                bucket.tokens -= held_tokens
                bucket.requests -= held_requests
                bucket.owed_tokens -= owed_tokens
                bucket.owed_requests -= owed_requests
                bucket.seen_tokens = after.get("tokens", 0)
                bucket.seen_requests = after.get("requests", 0)
                # Admissions that ran meanwhile may have dipped into what was returned: that is owed now.
                bucket.owed_tokens += max(0, -bucket.tokens)
                bucket.owed_requests += max(0, -bucket.requests)
                bucket.tokens, bucket.requests = max(0, bucket.tokens), max(0, bucket.requests)
                returned += 1
                self.counters.returned_leases += 1
        return returned
