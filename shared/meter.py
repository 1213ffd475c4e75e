"""After the response: settle the token reservation with the real usage, emit metrics, feed the ledger, log one line.

Every request that got past routing ends here exactly once, whether it
succeeded, failed, was served from the cache, or its stream was cut.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from shared.limits.limiter import Admission, Limiter
from shared.logs import clip
from shared.models import Usage
from shared.outcomes import RequestRecord

log = logging.getLogger("gateway.request")


PROMPT_LOG_CHARS = 4096


def prompt_of(body: Mapping[str, Any]) -> str:
    """The prompt as logged when GATEWAY_LOG_PROMPTS is on: the messages (or embedding input) as JSON, cut short."""
    text = json.dumps(body.get("messages", body.get("input")), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= PROMPT_LOG_CHARS else text[:PROMPT_LOG_CHARS] + "..."


class Telemetry(Protocol):
    def record(self, record: RequestRecord) -> None: ...


class Ledger(Protocol):
    def add(self, record: RequestRecord) -> None: ...


class Budgets(Protocol):
    def charge(self, record: RequestRecord) -> None: ...


class Meter:
    def __init__(
        self,
        limiter: Limiter,
        telemetry: Telemetry | None = None,
        ledger: Ledger | None = None,
        *,
        budgets: Budgets | None = None,
    ) -> None:
        self.limiter = limiter
        self.telemetry = telemetry
        self.ledger = ledger
        self.budgets = budgets

    async def finish(self, record: RequestRecord, admission: Admission | None) -> None:
        if admission is not None and not admission.settled:
            used = record.usage.total_tokens if record.usage else 0
            await self.limiter.settle(admission, used)
        if self.telemetry is not None:
            self.telemetry.record(record)
        if self.ledger is not None and record.caller is not None:
            self.ledger.add(record)
        if self.budgets is not None:
            self.budgets.charge(record)
        usage = record.usage or Usage()
        log.info(
            "%s %s status=%d outcome=%s subscription=%s deployment=%s backend=%s attempts=%d "
            "prompt_tokens=%d completion_tokens=%d cache=%s stream=%s ms=%.1f backend_ms=%.1f%s%s%s",
            record.operation,
            "stream" if record.streamed else "unary",
            record.status,
            record.outcome.value,
            record.caller.subscription_id if record.caller else "-",
            clip(record.deployment or "-"),
            record.backend or "-",
            len(record.attempts),
            usage.prompt_tokens,
            usage.completion_tokens,
            record.cache or "-",
            record.streamed,
            record.seconds * 1000,
            record.backend_seconds * 1000,
            f" error={record.error!r}" if record.error else "",
            f" trace={record.trace.trace_id}" if record.trace.trace_id else "",
            f" prompt={record.prompt}" if record.prompt is not None else "",
        )
