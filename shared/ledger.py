"""The usage ledger: what each subscription used, per deployment, backend and UTC hour, and what it cost.

Each finished request adds to counts kept in memory (`add`, no I/O). Every
GATEWAY_LEDGER_FLUSH_SECONDS the open counts are sealed into a batch,
numbered 1, 2, 3, ... per instance, and written to the `LedgerStore`; the
gateway's close writes whatever is left (the last flush on exit).

Nothing is counted twice: a stored row remembers, per instance, the last
batch number it has counted, so a batch written again (after a timeout that
hid a success, or after only some of its subscriptions were written) adds
nothing where it was already counted. Batches are written one at a time and
in order, and a sealed batch is never changed: while one cannot be stored,
new requests go into the open counts, to be sealed once it is.

Cost comes from GATEWAY_PRICES ({"<deployment>": {"input": x, "output": y}},
per 1,000 tokens) at the time of the request. Cache hits cost nothing and
count their tokens as `cached_tokens`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.errors import StoreUnavailable
from shared.outcomes import Outcome
from shared.stores.protocols import LedgerStore, UsageBatch, UsageCounts, UsageKey, UsageRow

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.outcomes import RequestRecord

log = logging.getLogger("gateway.ledger")

HOUR = 3600
CACHE_BACKEND = "cache"
_CLOSE_ATTEMPTS = 3


def hour_of(epoch: float) -> int:
    return int(epoch // HOUR) * HOUR


def price(
    prices: Mapping[str, Mapping[str, float]], deployment: str, prompt: int, completion: int, cached: int = 0
) -> float:
    """What a call cost: prompt tokens (the `cached` ones at the cached rate, if any) and completion tokens."""
    table = prices.get(deployment)
    if not table:
        return 0.0
    cached = min(max(cached, 0), prompt)
    input_rate = table.get("input", 0.0)
    cached_rate = table.get("cached_input", input_rate)
    return ((prompt - cached) * input_rate + cached * cached_rate + completion * table.get("output", 0.0)) / 1000


@dataclass(slots=True)
class _Open:
    """Counts still being added to (mutable: `add` runs once per request)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    subscription_name: str = ""

    def sealed(self) -> UsageCounts:
        return UsageCounts(
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            dict(self.requests),
            self.cost,
            self.subscription_name,
        )


class Ledger:
    def __init__(
        self,
        store: LedgerStore,
        clock: Clock,
        *,
        writer: str,
        prices: Mapping[str, Mapping[str, float]],
        deployments: frozenset[str],
        flush_seconds: float,
    ) -> None:
        self.store = store
        self._clock = clock
        self._writer = writer
        self._prices = prices
        self._deployments = deployments
        self._flush_seconds = flush_seconds
        self._open: dict[UsageKey, _Open] = {}
        self._outbox: UsageBatch | None = None  # sealed, not yet known to be stored
        self._sequence = 0
        self._lock: asyncio.Lock | None = None
        self._timer: asyncio.Task[None] | None = None
        self._failing = False
        self._closed = False

    # --- the hot path ---------------------------------------------------------------------------

    def add(self, record: RequestRecord) -> None:
        """Count one finished request of a known subscription."""
        caller = record.caller
        if caller is None:
            return
        deployment = record.deployment if record.deployment in self._deployments else ""
        backend = CACHE_BACKEND if record.outcome is Outcome.CACHE_HIT else record.backend or ""
        key = UsageKey(caller.subscription_id, hour_of(self._clock.now()), deployment, backend)
        counts = self._open.get(key)
        if counts is None:
            counts = self._open[key] = _Open()
        counts.subscription_name = caller.subscription_name
        outcome = record.outcome.value
        counts.requests[outcome] = counts.requests.get(outcome, 0) + 1
        if record.outcome is Outcome.CACHE_HIT:
            counts.cached_tokens += record.tokens_saved
        elif record.usage is not None:
            prompt, completion = record.usage.prompt_tokens, record.usage.completion_tokens
            counts.prompt_tokens += prompt
            counts.completion_tokens += completion
            counts.cost += price(self._prices, deployment, prompt, completion, record.usage.cached_prompt_tokens)
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().create_task(self._run())

    # --- writing ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except StoreUnavailable as exc:
                if not self._failing:
                    log.warning("usage ledger not written (kept in memory, retried): %s", exc)
                self._failing = True

    async def flush(self) -> None:
        """Write the batch waiting to be stored, if any, then seal the open counts and write them."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for _ in range(2):
                if self._outbox is None:
                    if not self._open:
                        break
                    self._sequence += 1
                    rows = {key: counts.sealed() for key, counts in self._open.items()}
                    self._outbox = UsageBatch(self._writer, self._sequence, rows)
                    self._open = {}
                await self.store.apply(self._outbox)
                self._outbox = None
                if self._failing:
                    log.warning("usage ledger written again")
                    self._failing = False

    async def close(self) -> None:
        """Stop the timer and write everything counted so far; say loudly what could not be written."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        for attempt in range(_CLOSE_ATTEMPTS):
            try:
                await self.flush()
                return
            except StoreUnavailable as exc:
                if attempt + 1 == _CLOSE_ATTEMPTS:
                    lost = self.unwritten()
                    log.error(
                        "usage ledger: %d requests (%d prompt, %d completion tokens) could not be written at exit: %s",
                        sum(sum(c.requests.values()) for c in lost.values()),
                        sum(c.prompt_tokens for c in lost.values()),
                        sum(c.completion_tokens for c in lost.values()),
                        exc,
                    )
                    return
                await asyncio.sleep(0.5 * (attempt + 1))

    # --- reading --------------------------------------------------------------------------------

    def unwritten(self) -> dict[UsageKey, UsageCounts]:
        """Counts of this instance not yet known to be stored: the batch in flight and the open counts."""
        merged: dict[UsageKey, UsageCounts] = dict(self._outbox.rows) if self._outbox else {}
        for key, counts in self._open.items():
            merged[key] = merged[key].plus(counts.sealed()) if key in merged else counts.sealed()
        return merged

    async def rows(self, start_hour: int, end_hour: int, subscription_id: str | None = None) -> list[UsageRow]:
        """Stored rows plus what this instance has not written yet (other instances' lag a flush behind)."""

        def wanted(key: UsageKey) -> bool:
            return start_hour <= key.hour < end_hour and subscription_id in (None, key.subscription_id)

        # Taken before the read: a flush may store them while it runs, and each row says which batches it holds.
        outbox = self._outbox
        sequence = self._sequence  # the open counts will go out in a later batch than this
        opened = {key: counts.sealed() for key, counts in self._open.items() if wanted(key)}
        stored = {row.key: row for row in await self.store.rows(start_hour, end_hour, subscription_id)}
        pending: list[tuple[UsageKey, UsageCounts, int]] = [(k, c, sequence + 1) for k, c in opened.items()]
        if outbox is not None:
            pending += [(k, c, outbox.sequence) for k, c in outbox.rows.items() if wanted(k)]
        for key, counts, batch in pending:
            row = stored.get(key)
            if row is None:
                stored[key] = UsageRow(key, counts, {})
            elif row.applied.get(self._writer, 0) < batch:
                stored[key] = UsageRow(key, row.counts.plus(counts), row.applied)
        return list(stored.values())
