"""`BudgetKeeper`: refuse a call whose subscription spent its budget, charge each call's cost, share the spend.

The design (one shared record per subscription, synced at a bounded rate,
alerts claimed by compare-and-swap) is drawn in the package docstring.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.budgets.alerts import AlertSender, BudgetAlert
from shared.errors import BudgetExceeded, StoreUnavailable
from shared.ledger import price
from shared.limits.windows import Window, quota_window, utc_iso
from shared.models import Budget, BudgetAction, Caller
from shared.outcomes import Outcome
from shared.stores.protocols import Counters, CounterStore

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.outcomes import RequestRecord

log = logging.getLogger("gateway.budget")

BUDGET_ROW = "budget"
MICROS = 1_000_000  # spend is kept in millionths of the currency: integers, exact under addition


def micros(amount: float) -> int:
    return round(amount * MICROS)


def alert_mark(stored: Counters, window: int) -> int:
    """The highest threshold (percent) already alerted in this period, by any instance."""
    return int(stored.get("alerted", 0)) if stored.get("window") == window else 0


def add_spend(
    stored: Counters, window: int, amount: int, spend: int, thresholds: tuple[int, ...]
) -> dict[str, int] | None:
    """The record after adding `spend` in the period starting at `window` (pure: a store may run it again)."""
    stored_window = stored.get("window", window)
    if stored_window > window:
        return None  # the record is in a later period: this instance's clock is behind, its spend counts there
    spent = (int(stored.get("spent", 0)) if stored_window == window else 0) + spend
    mark = alert_mark(stored, window)
    reached = max((t for t in thresholds if spent * 100 >= amount * t), default=0)
    if spend == 0 and stored_window == window and reached <= mark:
        return None  # nothing to write: a read was all this sync needed
    return {"window": window, "spent": spent, "alerted": max(mark, reached)}


@dataclass(slots=True)
class _Spend:
    """This instance's view of one subscription's spend in the current period."""

    budget: Budget
    window: Window
    seen: int = 0  # in the shared record at the last sync (every instance's spend)
    pending: int = 0  # charged here, not yet in the record
    alerted: int = 0
    synced_at: float = -math.inf
    name: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def spent(self) -> int:
        return self.seen + self.pending

    def next_threshold(self) -> int | None:
        return min((t for t in self.budget.thresholds if t > self.alerted), default=None)


class BudgetKeeper:
    def __init__(
        self,
        store: CounterStore,
        clock: Clock,
        alerts: AlertSender,
        *,
        prices: Mapping[str, Mapping[str, float]],
        deployments: frozenset[str],
        sync_seconds: float = 5.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._alerts = alerts
        self._prices = prices
        self._deployments = deployments
        self._sync_seconds = sync_seconds
        self._spends: dict[str, _Spend] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._store_down = False

    def _spend(self, subscription_id: str, name: str, budget: Budget) -> _Spend:
        now = self._clock.now()
        spend = self._spends.get(subscription_id)
        if spend is None:
            spend = self._spends[subscription_id] = _Spend(budget, quota_window(now, budget.period))
        if spend.budget != budget:  # an admin change: the next sync reads the record under the new terms
            if spend.budget.period != budget.period:
                spend.window = quota_window(now, budget.period)
                spend.seen = spend.alerted = 0
            spend.budget = budget
            spend.synced_at = -math.inf
        if now >= spend.window.end:  # a new period: what is pending counts in it
            spend.window = quota_window(now, budget.period)
            spend.seen = spend.alerted = 0
            spend.synced_at = -math.inf
        spend.name = name
        return spend

    # --- the two calls the pipeline makes -------------------------------------------------------

    async def check(self, caller: Caller) -> None:
        """403 `budget_exceeded` if the caller's subscription refuses at 100 % and has spent its budget."""
        budget = caller.budget
        if budget is None:
            return
        spend = self._spend(caller.subscription_id, caller.subscription_name, budget)
        if self._clock.now() - spend.synced_at >= self._sync_seconds:
            await self._sync(caller.subscription_id, spend, fresh_only=True)
        if budget.action is BudgetAction.REFUSE and spend.spent >= micros(budget.amount):
            reset = utc_iso(spend.window.end)
            raise BudgetExceeded(
                f"This subscription has spent its {budget.period.value} budget of {budget.amount:.2f} "
                f"{budget.currency}. It resets at {reset}.",
                headers={"x-ratelimit-reset-budget": reset},
            )

    def charge(self, record: RequestRecord) -> None:
        """Add a finished call's cost (no I/O; a sync is started when a threshold comes within reach)."""
        caller = record.caller
        if caller is None or caller.budget is None or record.usage is None or record.outcome is Outcome.CACHE_HIT:
            return
        deployment = record.deployment if record.deployment in self._deployments else ""
        usage = record.usage
        cost = micros(
            price(self._prices, deployment, usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)
        )
        if cost <= 0:
            return
        spend = self._spend(caller.subscription_id, caller.subscription_name, caller.budget)
        spend.pending += cost
        threshold = spend.next_threshold()
        if threshold is not None and spend.spent * 100 >= micros(caller.budget.amount) * threshold:
            self._spawn(self._sync(caller.subscription_id, spend))  # a threshold is in reach: claim it now
        elif self._clock.now() - spend.synced_at >= self._sync_seconds:
            self._spawn(self._sync(caller.subscription_id, spend, fresh_only=True))

    # --- the shared record ------------------------------------------------------------------------

    async def _sync(self, subscription_id: str, spend: _Spend, *, fresh_only: bool = False) -> None:
        """Add what is pending to the shared record, read everyone's spend, and send the alerts this write claimed."""
        async with spend.lock:
            if fresh_only and self._clock.now() - spend.synced_at < self._sync_seconds:
                return  # another sync ran while this one waited
            budget, window = spend.budget, spend.window
            pending, spend.pending = spend.pending, 0
            amount, thresholds = micros(budget.amount), budget.thresholds
            try:
                before, after = await self._store.update(
                    subscription_id,
                    BUDGET_ROW,
                    lambda stored: add_spend(stored, window.start, amount, pending, thresholds),
                )
            except StoreUnavailable as exc:
                spend.pending += pending
                spend.synced_at = self._clock.now()  # try again after an interval, not on every request
                if not self._store_down:
                    log.warning("budget spend not shared (%s): enforcing from this instance's view", exc)
                    self._store_down = True
                return
            if self._store_down:
                log.warning("budget spend shared again")
                self._store_down = False
            if spend.window.start != window.start:
                return  # the period rolled while this ran
            spend.seen = int(after.get("spent", 0)) if after.get("window") == window.start else pending + spend.seen
            spend.alerted = alert_mark(after, window.start)
            spend.synced_at = self._clock.now()
            claimed_from = alert_mark(before, window.start)
            for threshold in thresholds:
                if claimed_from < threshold <= spend.alerted:
                    self._alerts.fire(
                        BudgetAlert(
                            subscription_id=subscription_id,
                            subscription_name=spend.name,
                            threshold=threshold,
                            spent=spend.seen / MICROS,
                            amount=budget.amount,
                            currency=budget.currency,
                            period=budget.period.value,
                            period_start=utc_iso(window.start),
                            period_end=utc_iso(window.end),
                            action=budget.action.value,
                        )
                    )

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def status(self, subscription_id: str, budget: Budget) -> dict[str, Any]:
        """Spend against budget in the current period: the shared record plus what this instance has not written."""
        now = self._clock.now()
        window = quota_window(now, budget.period)
        try:
            stored = await self._store.read(subscription_id, BUDGET_ROW)
        except StoreUnavailable:
            stored = {}
        spent = int(stored.get("spent", 0)) if stored.get("window") == window.start else 0
        local = self._spends.get(subscription_id)
        if local is not None and local.window.start == window.start:
            spent += local.pending
        return budget_view(budget, window, spent, alert_mark(stored, window.start))

    async def flush(self) -> None:
        """Write every pending spend (the gateway's close)."""
        for subscription_id, spend in list(self._spends.items()):
            if spend.pending:
                await self._sync(subscription_id, spend)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        await self.flush()
        await self._alerts.close()


def budget_view(budget: Budget, window: Window, spent_micros: int, alerted: int) -> dict[str, Any]:
    amount = micros(budget.amount)
    return {
        "amount": budget.amount,
        "currency": budget.currency,
        "period": budget.period.value,
        "action": budget.action.value,
        "spent": round(spent_micros / MICROS, 6),
        "remaining": round(max(0, amount - spent_micros) / MICROS, 6),
        "percent": round(100 * spent_micros / amount, 2) if amount else 0.0,
        "thresholds": list(budget.thresholds),
        "alerted_up_to": alerted,
        "period_start": utc_iso(window.start),
        "resets_at": utc_iso(window.end),
    }


async def read_budget_status(store: CounterStore, subscription_id: str, budget: Budget, now: float) -> dict[str, Any]:
    """The same view from the shared record alone (the operator's command line, away from any gateway)."""
    window = quota_window(now, budget.period)
    stored = await store.read(subscription_id, BUDGET_ROW)
    spent = int(stored.get("spent", 0)) if stored.get("window") == window.start else 0
    return budget_view(budget, window, spent, alert_mark(stored, window.start))
