"""Token and request limits per subscription, shared by every instance at a small, bounded storage cost.

Before the call the pipeline asks `admit` to reserve an estimate (prompt
tokens counted offline, plus `max_tokens` or GATEWAY_DEFAULT_COMPLETION_TOKENS)
and one request; after it, `settle` replaces the reservation by the real usage
(0 refunds it all). Three limits apply, each in fixed windows aligned to UTC:
tokens per minute and requests per minute (window of GATEWAY_RATE_WINDOW_SECONDS,
60 by default; limits scale to it) and a token quota per hour, day, ISO week
(from Monday) or month. Over TPM or RPM: 429 with `Retry-After` and
`retry-after-ms` (until the window ends: only then does capacity return).
Over the quota: 403 with the reset time.

How instances share a window without a storage round trip per request:
one counter record per (subscription, rate | quota) in the `CounterStore`
holds the window and the tokens and requests *leased* in it by all instances.
An instance takes a lease (a slice of what is free) with one compare-and-swap
and reserves from it in memory until it is spent or the window ends; refunds
go back into the lease and are reused. A slice is

    max(needed now, min(free, ceil(free / 4), 60 s of this instance's recent use))

so slices shrink geometrically as the window fills (the last ones are the
size of single requests), and an instance with little traffic holds little.
A lease left alone for a quarter of its window (at most 60 s: no request for
that subscription reached the instance) is given back.
Once the record is full an instance stops asking (no I/O per refused
request) until a quarter of the window (at most 60 s) has passed.

The bound, per window of capacity C, with N instances sharing it:

* upper: leases never pass C, and reservations never pass leases, so tokens
  admitted in a window are at most C plus what requests used beyond their
  reservation (only a prompt estimate below the real count can cause that;
  the completion part is capped by max_tokens). Such overage is charged to the
  shared record at the instance's next write.
* lower, while every instance keeps receiving more than it may admit: an
  instance refuses only when its lease plus the record's free capacity is
  smaller than the request, so capacity left unused is below N times the
  largest reservation, plus the over-reservation (reserved minus used) of
  requests still running when the window closes: their refund comes too late
  for that window. Reservations close to real usage (clients that set
  max_tokens) keep that term small; GATEWAY_DEFAULT_COMPLETION_TOKENS is what
  is reserved otherwise. An instance that dies holding a lease strands it until
  the window ends: at most a quarter of what was free when it leased.
* clocks: windows are read from each instance's clock; one that runs ahead
  opens the next window early (by its skew, sub-second with NTP) and one that
  runs behind is refused until its clock reaches the record's window.
* cost: about two transactions (read, conditional write) per lease; per
  window and subscription about N + 4 ln(C / (C - U)) leases when the
  instances admit U tokens (plus about 4 ln(C / (N a)) more when a window is
  driven to full, a being the request size) - independent of the request rate.

When the counter store is unavailable, each instance enforces the limits on
its own from what it last saw of the record (so N instances may together
admit up to N times the remaining capacity), logs one warning, counts it in
`stats()`, and tries storage again every few seconds; what it admitted
meanwhile is charged to the shared record when storage answers again.
GATEWAY_LIMITS_FAIL_CLOSED=true refuses instead (503).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Protocol

from shared.clock import Clock
from shared.errors import QuotaExceeded, RateLimited, ServiceUnavailable, StoreUnavailable, retry_after_headers
from shared.models import Caller, Limits, Operation, QuotaPeriod
from shared.stores.embedded import EmbeddedCounterStore
from shared.stores.protocols import Counters, CounterStore

if TYPE_CHECKING:
    from shared.api import ApiCall

log = logging.getLogger("gateway.limits")

RATE_ROW, QUOTA_ROW = "rate", "quota"
SLICE_FRACTION = 0.25
LEASE_HORIZON_SECONDS = 60.0
OUTAGE_RETRY_SECONDS = 5.0
SWEEP_SECONDS = 1.0  # how often (real time) idle leases are looked for while any is held
_UNBOUNDED = 2**62
_MAX_BUCKETS = 50_000


# --- values -----------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


Estimator = Callable[["ApiCall", int], Estimate]


def estimate_call(call: ApiCall, default_completion_tokens: int) -> Estimate:
    """Prompt tokens counted offline, plus the completion budget (`max_tokens` or the default)."""
    from shared import tokens  # noqa: PLC0415 - the tokenizer loads on the first limited request

    if call.operation is Operation.EMBEDDINGS:
        return Estimate(tokens.estimate_embeddings_input(call.body), 0)
    return Estimate(
        tokens.estimate_chat_prompt(call.body), tokens.completion_budget(call.body, default_completion_tokens)
    )


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # epoch seconds, aligned to UTC
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def rate_window(now: float, seconds: int) -> Window:
    start = int(now // seconds) * seconds
    return Window(start, float(start + seconds))


def quota_window(now: float, period: QuotaPeriod) -> Window:
    """The fixed UTC period `now` falls in, as APIM counts quotas: hour, day, ISO week (Monday) or month."""
    t = datetime.fromtimestamp(now, UTC)
    if period is QuotaPeriod.HOURLY:
        start = t.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period is QuotaPeriod.DAILY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period is QuotaPeriod.WEEKLY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=t.weekday())
        end = start + timedelta(days=7)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return Window(int(start.timestamp()), end.timestamp())


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the shared record: a pure decision on what is stored --------------------------------------


@dataclass(frozen=True, slots=True)
class Caps:
    tokens: int | None  # per window; None: not limited
    requests: int | None


@dataclass(frozen=True, slots=True)
class LeaseAsk:
    window: int
    caps: Caps
    need_tokens: int  # the least that lets the waiting request through
    need_requests: int
    want_tokens: int  # the most worth holding (this instance's recent use over the horizon)
    want_requests: int
    owed_tokens: int = 0  # used here beyond earlier leases: charged whatever the caps say
    owed_requests: int = 0


@dataclass(frozen=True, slots=True)
class LeaseOutcome:
    tokens: int
    requests: int
    total_tokens: int  # the record's totals after this lease (every instance)
    total_requests: int
    short: str | None = None  # "tokens" | "requests": the cap that refused the lease
    stale: bool = False  # the record is in a later window: this instance's clock is behind


def _slice(cap: int | None, used: int, need: int, want: int) -> int | None:
    if cap is None:
        return 0
    free = cap - used
    if need > free:
        return None
    share = math.ceil(max(free, 0) * SLICE_FRACTION)
    return max(need, 0, min(free, want, share))


def decide_lease(stored: Counters, ask: LeaseAsk) -> tuple[dict[str, int] | None, LeaseOutcome]:
    """What a lease takes from the stored record: (the values to write or None, the outcome)."""
    window = stored.get("window", ask.window)
    if window > ask.window:
        return None, LeaseOutcome(0, 0, 0, 0, stale=True)
    same = window == ask.window
    used_tokens = (stored.get("tokens", 0) if same else 0) + ask.owed_tokens
    used_requests = (stored.get("requests", 0) if same else 0) + ask.owed_requests
    tokens = _slice(ask.caps.tokens, used_tokens, ask.need_tokens, ask.want_tokens)
    requests = _slice(ask.caps.requests, used_requests, ask.need_requests, ask.want_requests)
    short = "tokens" if tokens is None else "requests" if requests is None else None
    if tokens is None or requests is None:
        tokens = requests = 0
    outcome = LeaseOutcome(tokens, requests, used_tokens + tokens, used_requests + requests, short)
    if short and same and not (ask.owed_tokens or ask.owed_requests):
        return None, outcome  # refused and nothing to charge: no write
    return {"window": ask.window, "tokens": used_tokens + tokens, "requests": used_requests + requests}, outcome


def give_back(stored: Counters, window: int, tokens: int, requests: int) -> dict[str, int] | None:
    """Return an unused lease to the record (negative amounts charge what was used beyond one).

    Nothing to do once the record has moved on to a later window.
    """
    if stored.get("window") != window:
        return None
    return {
        "window": window,
        "tokens": max(0, stored.get("tokens", 0) - tokens),
        "requests": max(0, stored.get("requests", 0) - requests),
    }


# --- this instance's side ---------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    """This instance's lease on one shared record: a subscription's rate window or quota period."""

    partition: str
    row: str
    window: Window = Window(-1, 0.0)
    caps: Caps = Caps(None, None)
    tokens: int = 0  # leased and not yet reserved here
    requests: int = 0
    owed_tokens: int = 0  # used here beyond the lease (or granted while storage was away): not yet in the record
    owed_requests: int = 0
    seen_tokens: int = 0  # the record's totals when this instance last wrote it
    seen_requests: int = 0
    exhausted_until: float = 0.0  # the record was full: do not ask again before this
    short: str | None = None  # why the last lease was refused: "tokens" | "requests"
    last_asked: float = 0.0  # the last request that wanted this bucket, admitted or not
    leased_at: float = 0.0
    spent_tokens: int = 0  # reserved since the last lease: its rate sizes the next one
    spent_requests: int = 0
    rate_tokens: float = 0.0  # per second, smoothed; 0: not known yet
    rate_requests: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def roll(self, window: Window) -> None:
        if window.start != self.window.start:
            self.window = window
            self.tokens = self.requests = self.owed_tokens = self.owed_requests = 0
            self.seen_tokens = self.seen_requests = 0
            self.exhausted_until = 0.0
            self.short = None

    def take(self, tokens: int, requests: int) -> None:
        self.tokens -= tokens
        self.requests -= requests
        self.spent_tokens += tokens
        self.spent_requests += requests

    def adjust(self, delta: int) -> None:
        """Real usage minus reservation: a refund goes back into the lease, an overage comes out of it or is owed."""
        if delta < 0:
            self.tokens -= delta
        else:
            covered = min(delta, max(self.tokens, 0))
            self.tokens -= covered
            self.owed_tokens += delta - covered
        self.spent_tokens += delta

    def remaining(self, cap: int | None, seen: int, held: int) -> int | None:
        if cap is None:
            return None
        return min(cap, max(0, cap - seen) + max(0, held))


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


class Limiter(Protocol):
    async def admit(self, caller: Caller, call: ApiCall) -> Admission:
        """Reserve the call's estimated tokens and one request; raise `RateLimited` (429) or `QuotaExceeded` (403)."""
        ...

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        """Replace the reservation by what was really used (0 refunds it all). Idempotent: settles once."""
        ...

    def stats(self) -> dict[str, object]: ...


class NoLimits:
    async def admit(self, caller: Caller, call: ApiCall) -> Admission:
        return Admission(caller, 0)

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        admission.settled = True

    def stats(self) -> dict[str, object]:
        return {"kind": "none"}


def _short_of(bucket: _Bucket | None, tokens: int, requests: int) -> _Bucket | None:
    """The bucket if its lease cannot cover this reservation."""
    if bucket is not None and (bucket.tokens < tokens or bucket.requests < requests):
        return bucket
    return None


def _caps(limits: Limits, window_seconds: int) -> Caps:
    def scaled(per_minute: int | None) -> int | None:
        return None if per_minute is None else max(1, math.ceil(per_minute * window_seconds / 60))

    return Caps(scaled(limits.tokens_per_minute), scaled(limits.requests_per_minute))


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
        self._fallback = EmbeddedCounterStore()
        self._outage_until = 0.0
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._quota_windows: dict[QuotaPeriod, Window] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[int]] = set()
        self.counters = LimiterStats()

    # --- the two calls the pipeline makes -------------------------------------------------------

    async def admit(self, caller: Caller, call: ApiCall) -> Admission:
        limits = caller.limits
        has_rate = limits.tokens_per_minute is not None or limits.requests_per_minute is not None
        period = limits.token_quota_period if limits.token_quota is not None else None
        if not has_rate and period is None:
            # Nothing to enforce: count the prompt only where a cut stream may need it charged.
            prompt = self._estimate(call, self._default_completion).prompt if call.stream else 0
            return Admission(caller, 0, prompt_estimate=prompt)
        estimate = self._estimate(call, self._default_completion)
        tokens = estimate.total
        now = self._clock.now()
        rate = quota = None
        if has_rate:
            caps = _caps(limits, self._window_seconds)
            rate = self._bucket(caller.subscription_id, RATE_ROW, rate_window(now, self._window_seconds), caps)
            if caps.tokens is not None and tokens > caps.tokens:
                self.counters.rate_limited += 1
                raise RateLimited(
                    f"Request too large: it needs an estimated {tokens} tokens and this subscription's limit is "
                    f"{limits.tokens_per_minute} tokens per minute. Lower max_tokens or shorten the prompt.",
                    headers=self._headers(limits, rate, None),
                )
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
                    raise self._quota_exceeded(limits, short, rate, tokens)
                raise self._rate_limited(limits, short, quota)
        now = self._clock.now()
        for bucket, bucket_tokens, bucket_requests in ((rate, rate_tokens, rate_requests), (quota, tokens, 0)):
            if bucket is not None:
                bucket.take(bucket_tokens, bucket_requests)
        self.counters.admitted += 1
        return Admission(
            caller,
            tokens,
            self._headers(limits, rate, quota),
            prompt_estimate=estimate.prompt,
            rate_window=rate.window.start if rate else None,
            quota_window=quota.window.start if quota else None,
        )

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        if admission.settled:
            return
        admission.settled = True
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
            caps = _caps(limits, self._window_seconds)
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
        }

    # --- leases ----------------------------------------------------------------------------------

    def _bucket(self, subscription: str, row: str, window: Window, caps: Caps) -> _Bucket:
        key = (subscription, row)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                now = self._clock.now()
                self._buckets = {k: b for k, b in self._buckets.items() if b.window.end > now or b.lock.locked()}
            bucket = self._buckets[key] = _Bucket(subscription, row)
        bucket.roll(window)
        bucket.last_asked = self._clock.now()
        if caps != bucket.caps:  # limits may change (admin PATCH) while a window runs: look at the record again
            bucket.caps = caps
            bucket.exhausted_until = 0.0
        return bucket

    def _quota_window(self, now: float, period: QuotaPeriod) -> Window:
        window = self._quota_windows.get(period)
        if window is None or not window.start <= now < window.end:
            window = self._quota_windows[period] = quota_window(now, period)
        return window

    def _ask(self, bucket: _Bucket, need_tokens: int, need_requests: int, now: float) -> LeaseAsk:
        if bucket.leased_at:
            # Smoothed use since the last lease; a short interval is stretched so one burst does not dominate.
            span = max(now - bucket.leased_at, 1.0)
            tokens_rate, requests_rate = max(bucket.spent_tokens, 0) / span, max(bucket.spent_requests, 0) / span
            bucket.rate_tokens = tokens_rate if not bucket.rate_tokens else (bucket.rate_tokens + tokens_rate) / 2
            bucket.rate_requests = (
                requests_rate if not bucket.rate_requests else (bucket.rate_requests + requests_rate) / 2
            )

        def want(cap: int | None, rate: float, held: int, need: int) -> int:
            if cap is None:
                return 0
            if rate <= 0:
                return _UNBOUNDED  # not known yet: the share of what is free decides
            return max(need, math.ceil(rate * LEASE_HORIZON_SECONDS) - max(held, 0))

        return LeaseAsk(
            window=bucket.window.start,
            caps=bucket.caps,
            need_tokens=need_tokens,
            need_requests=need_requests,
            want_tokens=want(bucket.caps.tokens, bucket.rate_tokens, bucket.tokens, need_tokens),
            want_requests=want(bucket.caps.requests, bucket.rate_requests, bucket.requests, need_requests),
            owed_tokens=bucket.owed_tokens,
            owed_requests=bucket.owed_requests,
        )

    async def _refill(self, bucket: _Bucket, tokens: int, requests: int) -> bool:
        """Lease enough that `tokens` and `requests` can be reserved; False if the record cannot grant it."""
        async with bucket.lock:
            if bucket.tokens >= tokens and bucket.requests >= requests:
                return True  # a concurrent request refilled it while this one waited
            now = self._clock.now()
            if now < bucket.exhausted_until:
                return False
            ask = self._ask(bucket, max(0, tokens - bucket.tokens), max(0, requests - bucket.requests), now)
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

    async def _lease(self, bucket: _Bucket, ask: LeaseAsk) -> tuple[LeaseOutcome, bool]:
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

        before, _ = await self._fallback.update(
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

    # --- answers -----------------------------------------------------------------------------------

    def _headers(self, limits: Limits, rate: _Bucket | None, quota: _Bucket | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if rate is not None:
            # As OpenAI sends them: when this window's capacity comes back.
            reset = f"{max(0.0, rate.window.end - self._clock.now()):.3f}s"
            if limits.tokens_per_minute is not None:
                headers["x-ratelimit-reset-tokens"] = reset
            if limits.requests_per_minute is not None:
                headers["x-ratelimit-reset-requests"] = reset
        if rate is not None and limits.tokens_per_minute is not None:
            headers["x-ratelimit-limit-tokens"] = str(limits.tokens_per_minute)
            headers["x-ratelimit-remaining-tokens"] = str(
                rate.remaining(rate.caps.tokens, rate.seen_tokens, rate.tokens)
            )
        if rate is not None and limits.requests_per_minute is not None:
            headers["x-ratelimit-limit-requests"] = str(limits.requests_per_minute)
            headers["x-ratelimit-remaining-requests"] = str(
                rate.remaining(rate.caps.requests, rate.seen_requests, rate.requests)
            )
        if quota is not None:
            headers["x-ratelimit-limit-quota-tokens"] = str(limits.token_quota)
            headers["x-ratelimit-remaining-quota-tokens"] = str(
                quota.remaining(quota.caps.tokens, quota.seen_tokens, quota.tokens)
            )
            headers["x-ratelimit-reset-quota"] = _iso(quota.window.end)
        return headers

    def _rate_limited(self, limits: Limits, rate: _Bucket, quota: _Bucket | None) -> RateLimited:
        self.counters.rate_limited += 1
        wait = max(0.001, rate.window.end - self._clock.now())
        headers = {**self._headers(limits, rate, quota), **retry_after_headers(wait)}
        if rate.short == "requests":
            headers["x-ratelimit-remaining-requests"] = "0"
            what = f"request rate limit of {limits.requests_per_minute} requests per minute"
        else:
            headers["x-ratelimit-remaining-tokens"] = "0"
            what = f"token rate limit of {limits.tokens_per_minute} tokens per minute"
        return RateLimited(
            f"This subscription has exceeded its {what}. Retry after {math.ceil(wait)} seconds.", headers=headers
        )

    def _quota_exceeded(self, limits: Limits, quota: _Bucket, rate: _Bucket | None, tokens: int) -> QuotaExceeded:
        self.counters.quota_exceeded += 1
        reset = _iso(quota.window.end)
        period = limits.token_quota_period.value if limits.token_quota_period else ""
        return QuotaExceeded(
            f"This subscription has used its {period} token quota of {limits.token_quota} tokens "
            f"(this request needs an estimated {tokens}). The quota resets at {reset}.",
            headers=self._headers(limits, rate, quota),
        )
