"""After the response: settle the token reservation with the real usage, emit metrics, feed the ledger, log one line.

Every request that got past routing ends here exactly once, whether it
succeeded, failed, was served from the cache, or its stream was cut.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Protocol

from shared.ledger import price
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


# A content delta's text as it appears in an event, JSON escapes and all (decoded only if the stream is cut).
_CONTENT_RE = re.compile(rb'"content"\s*:\s*"((?:[^"\\]|\\.)*)"')


class SentContent:
    """The generated text of the events that reached a streaming caller, kept to charge a stream that was cut.

    A stream cut before the backend's usage chunk is charged its prompt (estimated)
    and the content tokens the caller really received, counted with the tokenizer
    the reservations use: not one token per event, and nothing for the role event.
    """

    __slots__ = ("_escaped",)

    def __init__(self) -> None:
        # One buffer, not a bytes object per event (about 45 bytes of object per token beyond its text): an
        # open stream keeps about its text's size. Escaped JSON string bodies joined end to end are still
        # one valid body, so it is decoded once, if ever.
        self._escaped = bytearray()

    def feed(self, events: bytes) -> None:
        compact = events.count(b'"content":"')
        if compact != events.count(b'"content"'):  # spaced out, or a null content: the pattern reads it
            for part in _CONTENT_RE.findall(events):
                self._escaped += part
            return
        # The compact form, as Azure and the simulator send it: a find for each end instead of the pattern
        # (half the CPU per event); a text with an escaped quote in it goes to the pattern.
        at = events.find(b'"content":"') if compact else -1
        while at >= 0:
            start = at + 11
            end = events.find(b'"', start)
            if end < 0:
                return
            if events[end - 1] == 0x5C:  # a backslash before the quote: escapes, read by the pattern
                found = _CONTENT_RE.match(events, at)
                if found is None:
                    return
                self._escaped += found.group(1)
                end = found.end() - 1
            else:
                self._escaped += events[start:end]
            at = events.find(b'"content":"', end + 1)

    def text(self) -> str:
        escaped = bytes(self._escaped)
        try:
            text: str = json.loads(b'"' + escaped + b'"')
        except (json.JSONDecodeError, UnicodeDecodeError):
            return escaped.decode("utf-8", "replace")
        return text

    def tokens(self) -> int:
        from shared import tokens  # noqa: PLC0415 - the tokenizer is loaded already by the limiter, or lazily here

        return tokens.count_text(self.text())


class Telemetry(Protocol):
    def record(self, record: RequestRecord) -> None: ...


class Ledger(Protocol):
    def add(self, record: RequestRecord) -> None: ...


class Abandoned:
    """Attempts given up at a timeout, per deployment: how many, their prompt tokens (estimated), their cost."""

    def __init__(self, prices: Mapping[str, Mapping[str, float]]) -> None:
        self._prices = prices
        self._by_deployment: dict[str, list[float]] = {}  # deployment -> [attempts, prompt tokens, cost]

    def add(self, record: RequestRecord) -> None:
        count = record.abandoned
        if not count:
            return
        deployment = record.deployment or "-"
        tokens = count * record.prompt_estimate
        row = self._by_deployment.setdefault(deployment, [0, 0, 0.0])
        row[0] += count
        row[1] += tokens
        row[2] += price(self._prices, deployment, tokens, 0)

    def report(self) -> dict[str, object]:
        rows = self._by_deployment
        return {
            "attempts": int(sum(r[0] for r in rows.values())),
            "estimated_prompt_tokens": int(sum(r[1] for r in rows.values())),
            "estimated_cost": round(sum(r[2] for r in rows.values()), 6),
            "by_deployment": {
                d: {"attempts": int(r[0]), "estimated_prompt_tokens": int(r[1]), "estimated_cost": round(r[2], 6)}
                for d, r in sorted(rows.items())
            },
        }


class Budgets(Protocol):
    def charge(self, record: RequestRecord) -> None: ...


class AuditLog(Protocol):
    def add(self, record: RequestRecord) -> None: ...


class Meter:
    def __init__(
        self,
        limiter: Limiter,
        telemetry: Telemetry | None = None,
        ledger: Ledger | None = None,
        *,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        budgets: Budgets | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.limiter = limiter
        self.telemetry = telemetry
        self.ledger = ledger
        self.abandoned = Abandoned(prices or {})
        self.budgets = budgets
        self.audit = audit

    async def finish(self, record: RequestRecord, admission: Admission | None) -> None:
        if admission is not None and not record.prompt_estimate:
            record.prompt_estimate = admission.prompt_estimate
        self.abandoned.add(record)
        if admission is not None and not admission.settled:
            used = record.usage.total_tokens if record.usage else 0
            await self.limiter.settle(admission, used)
        if self.telemetry is not None:
            self.telemetry.record(record)
        if self.ledger is not None and record.caller is not None:
            self.ledger.add(record)
        if self.budgets is not None:
            self.budgets.charge(record)
        if self.audit is not None and record.request_body is not None:
            self.audit.add(record)  # queued, never awaited: a full queue drops the record, not the request
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
