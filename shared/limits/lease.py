"""Leases: what one compare-and-swap takes from a shared counter record, and what this instance holds of it.

The decisions on the stored record (`decide_lease`, `give_back`, the slice
size) are pure functions of the stored values, so a store may run them more
than once on a conflict. `Bucket` is this instance's side of one record:
what it leased and has not reserved yet, what it owes, and how fast it
spends, which sizes its next lease. `LocalRecords` stands in for the shared
records while storage is unavailable. The design and its bound are drawn in
the package docstring (`shared/limits/__init__.py`).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from shared.limits.windows import NO_WINDOW, Window
from shared.models import Limits
from shared.stores.protocols import CounterChange, Counters

SLICE_FRACTION = 0.25
LEASE_HORIZON_SECONDS = 60.0
_UNBOUNDED = 2**62


@dataclass(frozen=True, slots=True)
class Caps:
    tokens: int | None  # per window; None: not limited
    requests: int | None


def rate_caps(limits: Limits, window_seconds: int) -> Caps:
    """The per-minute limits scaled to a rate window of `window_seconds`."""

    def scaled(per_minute: int | None) -> int | None:
        return None if per_minute is None else max(1, math.ceil(per_minute * window_seconds / 60))

    return Caps(scaled(limits.tokens_per_minute), scaled(limits.requests_per_minute))


_NO_CAPS = Caps(None, None)


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


def lease_slice(cap: int | None, used: int, need: int, want: int) -> int | None:
    """`max(need, min(free, want, ceil(free / 4)))`; 0 when not limited, None when `need` does not fit."""
    if cap is None:
        return 0
    free = cap - used
    if need > free:
        return None
    share = math.ceil(max(free, 0) * SLICE_FRACTION)
    return max(need, 0, min(free, want, share))


def lease_want(cap: int | None, rate: float, held: int, need: int) -> int:
    """The most worth leasing: the horizon's worth of use at `rate` (per second) beyond what is held."""
    if cap is None:
        return 0
    if rate <= 0:
        return _UNBOUNDED  # not known yet: the share of what is free decides
    return max(need, math.ceil(rate * LEASE_HORIZON_SECONDS) - max(held, 0))


def decide_lease(stored: Counters, ask: LeaseAsk) -> tuple[dict[str, int] | None, LeaseOutcome]:
    """What a lease takes from the stored record: (the values to write or None, the outcome)."""
    window = stored.get("window", ask.window)
    if window > ask.window:
        return None, LeaseOutcome(0, 0, 0, 0, stale=True)
    same = window == ask.window
    used_tokens = (stored.get("tokens", 0) if same else 0) + ask.owed_tokens
    used_requests = (stored.get("requests", 0) if same else 0) + ask.owed_requests
    tokens = lease_slice(ask.caps.tokens, used_tokens, ask.need_tokens, ask.want_tokens)
    requests = lease_slice(ask.caps.requests, used_requests, ask.need_requests, ask.want_requests)
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


@dataclass(slots=True)
class Bucket:
    """This instance's lease on one shared record: a subscription's rate window or quota period."""

    partition: str
    row: str
    window: Window = NO_WINDOW
    caps: Caps = _NO_CAPS
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

    def clamp(self, caps: Caps) -> None:
        """Limits lowered mid-window: keep no more of the held lease than the new caps leave room for.

        `seen_*` are the record's totals, which count this lease whole; what is used (here or by other
        instances) is the total minus what is held. The part beyond the new cap stays counted in the record:
        the window is at or near its new limit anyway.
        """
        if caps.tokens is not None and self.tokens > 0:
            self.tokens = min(self.tokens, max(0, caps.tokens - (self.seen_tokens - self.tokens)))
        if caps.requests is not None and self.requests > 0:
            self.requests = min(self.requests, max(0, caps.requests - (self.seen_requests - self.requests)))

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

    def short_of(self, tokens: int, requests: int) -> bool:
        """True if what is held cannot cover this reservation."""
        return self.tokens < tokens or self.requests < requests

    def ask(self, need_tokens: int, need_requests: int, now: float) -> LeaseAsk:
        """The next lease to ask for, sized by the use since the last one (which this updates)."""
        if self.leased_at:
            # Smoothed use since the last lease; a short interval is stretched so one burst does not dominate.
            span = max(now - self.leased_at, 1.0)
            tokens_rate, requests_rate = max(self.spent_tokens, 0) / span, max(self.spent_requests, 0) / span
            self.rate_tokens = tokens_rate if not self.rate_tokens else (self.rate_tokens + tokens_rate) / 2
            self.rate_requests = requests_rate if not self.rate_requests else (self.rate_requests + requests_rate) / 2
        return LeaseAsk(
            window=self.window.start,
            caps=self.caps,
            need_tokens=need_tokens,
            need_requests=need_requests,
            want_tokens=lease_want(self.caps.tokens, self.rate_tokens, self.tokens, need_tokens),
            want_requests=lease_want(self.caps.requests, self.rate_requests, self.requests, need_requests),
            owed_tokens=self.owed_tokens,
            owed_requests=self.owed_requests,
        )


class LocalRecords:
    """This instance's own copy of the counter records, leased from while the shared store is unavailable.

    Plain memory, never shared: with no await between read and write every update is atomic.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], dict[str, int]] = {}

    def update(self, partition: str, row: str, change: CounterChange) -> Counters:
        """Apply `change` to the record ({} when absent); returns the values it was applied to."""
        before = dict(self._rows.get((partition, row), {}))
        after = change(before)
        if after is not None:
            self._rows[(partition, row)] = dict(after)
        return before
