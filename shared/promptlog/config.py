"""GATEWAY_PROMPT_LOG: how the audit log writes (container, queue, batches, record cap) and what it masks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

BUILTIN_PATTERNS = ("credit_card", "email")
_CONTAINER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


@dataclass(frozen=True, slots=True)
class PromptLogConfig:
    container: str = "promptlog"
    queue_size: int = 10_000  # records waiting to be written; more are dropped (counted), never waited for
    batch_records: int = 500  # records per append (one storage transaction)
    flush_seconds: float = 5.0  # the longest a record waits for its batch to fill
    max_record_bytes: int = 64 * 1024  # a larger record has its request and completion cut, and says so
    redact: tuple[str, ...] = BUILTIN_PATTERNS  # built-in names or regular expressions
    lookup_hours: int = 24  # how far back a look-up without a time scans


_FIELDS = {
    "container",
    "queue_size",
    "batch_records",
    "flush_seconds",
    "max_record_bytes",
    "redact",
    "lookup_hours",
}


def _whole(
    raw: dict[str, Any], name: str, default: int, minimum: int, problems: list[str], *, maximum: int = 10**9
) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        problems.append(f"GATEWAY_PROMPT_LOG.{name}: a whole number from {minimum} to {maximum}")
        return default
    return value


def parse_prompt_log_config(raw: Any, problems: list[str]) -> PromptLogConfig:
    base = PromptLogConfig()
    if raw is None:
        return base
    if not isinstance(raw, dict):
        problems.append("GATEWAY_PROMPT_LOG: must be a JSON object")
        return base
    for key in sorted(set(raw) - _FIELDS):
        problems.append(f"GATEWAY_PROMPT_LOG: unknown field {key!r}")
    container = raw.get("container", base.container)
    if not isinstance(container, str) or not _CONTAINER_RE.match(container):
        problems.append("GATEWAY_PROMPT_LOG.container: 3-63 lower-case letters, digits and single hyphens")
        container = base.container
    flush = raw.get("flush_seconds", base.flush_seconds)
    if isinstance(flush, bool) or not isinstance(flush, int | float) or flush <= 0:
        problems.append("GATEWAY_PROMPT_LOG.flush_seconds: a positive number")
        flush = base.flush_seconds
    redact = raw.get("redact", list(base.redact))
    patterns: list[str] = []
    if not isinstance(redact, list) or not all(isinstance(p, str) and p for p in redact):
        problems.append(f"GATEWAY_PROMPT_LOG.redact: a list of {' / '.join(BUILTIN_PATTERNS)} or regular expressions")
    else:
        for pattern in redact:
            if pattern not in BUILTIN_PATTERNS:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    problems.append(f"GATEWAY_PROMPT_LOG.redact: {pattern!r} is not a regular expression ({exc})")
                    continue
            patterns.append(pattern)
    return PromptLogConfig(
        container=container,
        queue_size=_whole(raw, "queue_size", base.queue_size, 1, problems),
        batch_records=_whole(raw, "batch_records", base.batch_records, 1, problems),
        flush_seconds=float(flush),
        max_record_bytes=_whole(raw, "max_record_bytes", base.max_record_bytes, 1024, problems, maximum=1024 * 1024),
        redact=tuple(patterns),
        lookup_hours=_whole(raw, "lookup_hours", base.lookup_hours, 1, problems),
    )
