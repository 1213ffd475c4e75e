"""What one finished request amounts to: its outcome and its record, read by the meter, telemetry and the ledger.

A leaf: the stages that fill the record and the rooms that read it all import
from here, and this imports only the shared value types, so none of them has
to import another to agree on the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from shared.models import Caller, Usage


class Outcome(StrEnum):
    SUCCESS = "success"
    CACHE_HIT = "cache_hit"
    CLIENT_ERROR = "client_error"
    UNAUTHORIZED = "unauthorized"
    THROTTLED = "throttled"  # the subscription's own TPM / RPM limit
    QUOTA_EXCEEDED = "quota_exceeded"
    BACKEND_ERROR = "backend_error"  # no backend could answer, or one failed mid-stream
    CONTENT_FILTERED = "content_filtered"  # Content Safety blocked the prompt before any backend saw it
    OVERLOADED = "overloaded"  # the gateway shed the request itself (its slots were full); no backend was at fault


# Attempt outcomes the gateway gave up on before the answer came: the request had been sent, so the
# backend may still complete it and bill its tokens, though nobody receives them.
ABANDONED_OUTCOMES = frozenset({"timeout"})


class Trace(Protocol):
    """What the pipeline, the meter and telemetry use of a request's trace (`shared.telemetry.RequestTrace`)."""

    @property
    def trace_id(self) -> str | None: ...

    def stage(self, name: str) -> AbstractContextManager[None]: ...

    def finish(self, record: RequestRecord, overhead: float, *, log_prompts: bool) -> None: ...


class _Untraced:
    """The trace of a record made outside the pipeline (tests, benchmarks): no id, no spans."""

    __slots__ = ()

    @property
    def trace_id(self) -> str | None:
        return None

    def stage(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()

    def finish(self, record: RequestRecord, overhead: float, *, log_prompts: bool) -> None:
        return None


UNTRACED: Trace = _Untraced()


@dataclass(slots=True)
class RequestRecord:
    """Everything known about one request when it ends: the input of metrics, the ledger and the log line."""

    request_id: str
    operation: str
    status: int = 0
    outcome: Outcome = Outcome.SUCCESS
    caller: Caller | None = None
    deployment: str | None = None
    backend: str | None = None
    region: str | None = None
    streamed: bool = False
    usage: Usage | None = None
    cache: str | None = None  # HIT | MISS | BYPASS, or None when the cache is off
    cache_check: str = ""  # a semantic candidate's verification: "pass" or why it was refused
    tokens_saved: int = 0
    attempts: list[tuple[str, str, float]] = field(default_factory=list)  # (backend, outcome, seconds)
    seconds: float = 0.0
    backend_seconds: float = 0.0
    ready_seconds: float = 0.0  # until the response, or a stream's first event, was ready (0: same as seconds)
    error: str | None = None
    trace: Trace = UNTRACED
    prompt: str | None = None  # set only when GATEWAY_LOG_PROMPTS is on
    prompt_estimate: int = 0  # the prompt's tokens as counted offline at admission (the cost of an abandoned attempt)
    # Set only when the caller's subscription sends this deployment's requests to the audit log (shared.promptlog).
    request_body: Mapping[str, Any] | None = None
    completion: Any = None  # the answer, the assembled stream, or the error envelope

    @property
    def abandoned(self) -> int:
        """Attempts of this request the gateway gave up on at a timeout (each may still be billed)."""
        return sum(1 for attempt in self.attempts if attempt[1] in ABANDONED_OUTCOMES)
