"""Usage views over the ledger: a subscriber's own (`GET /usage`), the operators' (`GET /gateway/admin/usage`), the CLI.

`GET /usage`, with the subscription key as on any API call: the current and
previous period (the subscription's quota period, else `?period=hourly |
daily | weekly | monthly`, default monthly), tokens, requests by outcome and
cost, split by deployment; the limits with what remains of them.

`GET /gateway/admin/usage?from=&to=&group_by=subscription|deployment|backend`
with `x-admin-key` (the Functions host keeps routes starting with `admin`
for itself, hence the `/gateway` in front): every row between two UTC times
(ISO 8601 or epoch seconds, hours included from the one `from` falls in up
to, not including, `to`; default the last 24 hours), added up by the chosen
dimension, plus an optional `subscription=` filter.

Command line, the same report as a table or `--json`:

    python -m shared.admin usage --from 2025-06-01 --to 2025-07-01 --group-by deployment
    python -m shared.admin usage --url http://127.0.0.1:7071 --admin-key ... --json

Rows written by other instances appear once they flush (GATEWAY_LEDGER_FLUSH_SECONDS);
this instance's own counts are always included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shared.admin.access import authorize
from shared.clock import parse_instant
from shared.errors import BadRequest, MethodNotAllowed
from shared.ledger import HOUR, hour_of
from shared.models import Caller, GatewayRequest, GatewayResponse, QuotaPeriod
from shared.stores.protocols import UsageCounts, UsageRow

if TYPE_CHECKING:
    from shared.gateway import Gateway

GROUPS = ("subscription", "deployment", "backend")
DEFAULT_SPAN_SECONDS = 24 * HOUR


@runtime_checkable
class ReportsRemaining(Protocol):
    """A limiter that can say what is left of a caller's limits now (None: that limit is not set)."""

    async def remaining(self, caller: Caller) -> Mapping[str, int | None]: ...


# --- adding rows up ---------------------------------------------------------------------------


@dataclass(slots=True)
class Totals:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0

    def add(self, counts: UsageCounts) -> None:
        self.prompt_tokens += counts.prompt_tokens
        self.completion_tokens += counts.completion_tokens
        self.cached_tokens += counts.cached_tokens
        for outcome, n in counts.requests.items():
            self.requests[outcome] = self.requests.get(outcome, 0) + n
        self.cost += counts.cost

    def view(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "requests": sum(self.requests.values()),
            "requests_by_outcome": dict(sorted(self.requests.items())),
            "cost": round(self.cost, 6),
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def group_rows(rows: Iterable[UsageRow], group_by: str) -> list[dict[str, Any]]:
    """Rows added up per subscription, deployment or backend, largest token use first."""
    groups: dict[str, Totals] = {}
    names: dict[str, str] = {}
    for row in rows:
        key = row.key
        label = {"subscription": key.subscription_id, "deployment": key.deployment, "backend": key.backend}[group_by]
        groups.setdefault(label, Totals()).add(row.counts)
        if group_by == "subscription" and row.counts.subscription_name:
            names[label] = row.counts.subscription_name
    out = []
    for label, totals in groups.items():
        item: dict[str, Any] = {group_by: label or "-"}
        if group_by == "subscription":
            item["subscription_name"] = names.get(label, "")
        out.append({**item, **totals.view()})
    out.sort(key=lambda i: (-int(i["total_tokens"]), -int(i["requests"]), str(i[group_by])))
    return out


def report(rows: list[UsageRow], start: int, end: int, group_by: str) -> dict[str, Any]:
    total = Totals()
    for row in rows:
        total.add(row.counts)
    return {
        "from": _iso(start),
        "to": _iso(end),
        "group_by": group_by,
        "data": group_rows(rows, group_by),
        "total": total.view(),
    }


def parse_time(text: str, name: str) -> float:
    """ISO 8601 (a date, or a time; UTC unless it says otherwise) or epoch seconds."""
    instant = parse_instant(text)
    if instant is None:
        raise BadRequest(f"'{name}' must be an ISO 8601 time or epoch seconds.", param=name)
    return instant


def time_range(given_from: str | None, given_to: str | None, now: float) -> tuple[int, int]:
    """Whole hours: from the one `from` falls in, to the one `to` falls in (excluded unless `to` is mid-hour)."""
    end_time = parse_time(given_to, "to") if given_to else now
    start_time = parse_time(given_from, "from") if given_from else end_time - DEFAULT_SPAN_SECONDS
    start, end = hour_of(start_time), hour_of(end_time)
    if end_time > end:  # a `to` inside an hour includes that hour
        end += HOUR
    if end <= start:
        raise BadRequest("'to' must be after 'from'.", param="to")
    return start, end


# --- the subscriber's view --------------------------------------------------------------------


def _period_bounds(now: float, period: QuotaPeriod) -> tuple[tuple[int, int], tuple[int, int]]:
    from shared.limits.windows import quota_window  # noqa: PLC0415 - the limits own how periods align

    current = quota_window(now, period)
    previous = quota_window(current.start - 1, period)
    return (int(current.start), int(current.end)), (int(previous.start), int(previous.end))


def _period_view(rows: list[UsageRow], start: int, end: int) -> dict[str, Any]:
    inside = [r for r in rows if start <= r.key.hour < end]
    total = Totals()
    by_deployment: dict[str, Totals] = {}
    for row in inside:
        total.add(row.counts)
        by_deployment.setdefault(row.key.deployment or "-", Totals()).add(row.counts)
    return {
        "from": _iso(start),
        "to": _iso(end),
        **total.view(),
        "by_deployment": {name: t.view() for name, t in sorted(by_deployment.items())},
    }


async def subscription_usage(gateway: Gateway, caller: Caller, period_name: str | None) -> dict[str, Any]:
    limits = caller.limits
    period = limits.token_quota_period if limits.token_quota is not None else None
    if period is None:
        try:
            period = QuotaPeriod((period_name or "monthly").lower())
        except ValueError:
            raise BadRequest("'period' must be hourly, daily, weekly or monthly.", param="period") from None
    now = gateway.clock.now()
    (cur_start, cur_end), (prev_start, prev_end) = _period_bounds(now, period)
    rows = await gateway.ledger.rows(prev_start, cur_end, caller.subscription_id)
    current = _period_view(rows, cur_start, cur_end)
    remaining: Mapping[str, int | None] = {}
    if isinstance(gateway.limiter, ReportsRemaining):
        remaining = await gateway.limiter.remaining(caller)
    limit_view: dict[str, Any] = {
        "tokens_per_minute": {"limit": limits.tokens_per_minute, "remaining": remaining.get("tokens_per_minute")},
        "requests_per_minute": {"limit": limits.requests_per_minute, "remaining": remaining.get("requests_per_minute")},
    }
    if limits.token_quota is not None and limits.token_quota_period is not None:
        used = int(current["total_tokens"])
        limit_view["token_quota"] = {
            "limit": limits.token_quota,
            "period": limits.token_quota_period.value,
            "used": used,
            "remaining": max(0, limits.token_quota - used),
            "resets_at": _iso(cur_end),
        }
    else:
        limit_view["token_quota"] = None
    budget = await gateway.budgets.status(caller.subscription_id, caller.budget) if caller.budget else None
    return {
        "subscription": {"id": caller.subscription_id, "name": caller.subscription_name},
        "period": period.value,
        "current": current,
        "previous": _period_view(rows, prev_start, prev_end),
        "limits": limit_view,
        "budget": budget,
    }


# --- HTTP -------------------------------------------------------------------------------------


def _json(status: int, payload: Any, request_id: str) -> GatewayResponse:
    return GatewayResponse(
        status,
        {"content-type": "application/json", "x-request-id": request_id, "cache-control": "no-store"},
        json.dumps(payload).encode(),
    )


async def handle_subscription(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """`GET /usage`: the calling subscription's own usage and limits."""
    if request.method != "GET":
        raise MethodNotAllowed(f"{request.method} is not supported on /usage; use GET.", headers={"Allow": "GET"})
    caller = await gateway.authenticator.authenticate(request.headers)
    payload = await subscription_usage(gateway, caller, request.query.get("period"))
    return _json(200, payload, request.request_id)


async def handle_admin(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """`GET /gateway/admin/usage`: every subscription's usage, added up by the dimension asked for."""
    await authorize(gateway.settings, gateway.tokens, request)
    if request.method != "GET":
        raise MethodNotAllowed(f"{request.method} is not supported here; use GET.", headers={"Allow": "GET"})
    group_by = request.query.get("group_by", "subscription")
    if group_by not in GROUPS:
        raise BadRequest("'group_by' must be subscription, deployment or backend.", param="group_by")
    start, end = time_range(request.query.get("from"), request.query.get("to"), gateway.clock.now())
    subscription = request.query.get("subscription") or None
    rows = await gateway.ledger.rows(start, end, subscription)
    return _json(200, report(rows, start, end, group_by), request.request_id)
