"""A budget threshold crossed: a structured log line, a metric, and an optional webhook signed with HMAC-SHA256.

The webhook is POSTed in the background (never on a request's path) and
retried with exponential backoff on network errors, timeouts, 408, 429 and
5xx; other answers end it. The body is JSON; `x-gateway-signature` is
`sha256=<hex HMAC-SHA256 of the exact body bytes with GATEWAY_BUDGET_WEBHOOK_SECRET>`,
and `x-gateway-delivery` the alert's id (the same on every retry, so a
receiver can drop duplicates).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from shared.httpsession import SessionProvider

log = logging.getLogger("gateway.budget")

ATTEMPTS = 5
BACKOFF_SECONDS = 1.0
TIMEOUT_SECONDS = 10.0
_RETRIED = {408, 429}


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    subscription_id: str
    subscription_name: str
    threshold: int  # percent
    spent: float
    amount: float
    currency: str
    period: str
    period_start: str  # ISO 8601, UTC
    period_end: str
    action: str  # what happens at 100 %: refuse | alert

    @property
    def id(self) -> str:
        return f"{self.subscription_id}:{self.period_start}:{self.threshold}"


class AlertMetrics(Protocol):
    def record_budget_alert(self, subscription_id: str, subscription_name: str, threshold: int) -> None: ...


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class AlertSender:
    def __init__(
        self,
        session: SessionProvider,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        metrics: AlertMetrics | None = None,
        backoff_seconds: float = BACKOFF_SECONDS,
    ) -> None:
        self._session = session
        self._url = webhook_url
        self._secret = webhook_secret
        self._metrics = metrics
        self._backoff = backoff_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    def fire(self, alert: BudgetAlert) -> None:
        log.warning(
            "budget_alert subscription=%s name=%r threshold=%d%% spent=%.6f amount=%.2f currency=%s period=%s "
            "resets_at=%s action=%s",
            alert.subscription_id,
            alert.subscription_name,
            alert.threshold,
            alert.spent,
            alert.amount,
            alert.currency,
            alert.period,
            alert.period_end,
            alert.action,
        )
        if self._metrics is not None:
            self._metrics.record_budget_alert(alert.subscription_id, alert.subscription_name, alert.threshold)
        if self._url:
            task = asyncio.get_running_loop().create_task(self._deliver(self._url, alert))
            self._tasks.add(task)  # held: the loop keeps only weak references
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, alert: BudgetAlert) -> None:
        import aiohttp  # noqa: PLC0415 - lazy, as everywhere the session is used

        body = json.dumps({"type": "budget.threshold", "id": alert.id, **asdict(alert)}, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "x-gateway-event": "budget.threshold",
            "x-gateway-delivery": alert.id,
        }
        if self._secret:
            headers["x-gateway-signature"] = sign(self._secret, body)
        for attempt in range(ATTEMPTS):
            outcome = ""
            try:
                session = await self._session()
                async with session.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
                ) as response:
                    if response.status < 300:
                        self.sent += 1
                        return
                    outcome = f"HTTP {response.status}"
                    if response.status < 500 and response.status not in _RETRIED:
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(self._backoff * 2**attempt)
        self.failed += 1
        log.error("budget alert %s: webhook not delivered (%s)", alert.id, outcome)

    async def close(self, seconds: float = 5.0) -> None:
        """Wait (bounded) for webhooks still being sent."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)
