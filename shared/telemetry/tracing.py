"""Traces: the per-instance budget, W3C `traceparent`, one request's span tree and its backend attempts' spans.

Traces use the OpenTelemetry SDK, but only for the requests the budget picks
(GATEWAY_TRACES_PER_SECOND per instance), so tracing costs nothing per
request beyond the decision. A traced request gets a server span with a
child per stage (`stage()`) and a client span per backend attempt
(`attempt()`, found through a context variable so the proxy need not carry
it), and the attempt's W3C `traceparent` goes to the backend. An untraced
request passes the caller's own `traceparent` on unchanged.

The SDK is imported only on a traced request's path; the tracer itself is
set up by `export`.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.telemetry.names import (
    ATTEMPT_OUTCOME,
    BACKEND,
    CACHE,
    CACHE_STATES,
    DEPLOYMENT,
    ERROR_TYPE,
    GEN_AI_OPERATIONS,
    MODEL,
    OPERATION,
    OUTCOME,
    PROVIDER,
    PROVIDER_NAME,
    REGION,
    SPAN_OVERHEAD_MS,
    SPAN_REQUEST_ID,
    STATUS,
    STREAMED,
    SUBSCRIPTION_ID,
    SUBSCRIPTION_NAME,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from shared.models import GatewayRequest
    from shared.outcomes import RequestRecord

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")
_NULL_TRACE, _NULL_SPAN = "0" * 32, "0" * 16
_NOOP: AbstractContextManager[None] = nullcontext()


def parse_traceparent(value: str | None) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a valid W3C `traceparent`, else None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip())
    if match is None or match.group(1) == "ff" or match.group(2) == _NULL_TRACE or match.group(3) == _NULL_SPAN:
        return None
    return int(match.group(2), 16), int(match.group(3), 16), int(match.group(4), 16)


def format_traceparent(trace_id: int, span_id: int, *, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


class TraceBudget:
    """At most `per_second` traces a second (a token bucket holding up to one second's worth)."""

    __slots__ = ("_capacity", "_level", "_updated", "per_second")

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._capacity = max(1.0, per_second)
        self._level = self._capacity
        self._updated = time.monotonic()

    def take(self) -> bool:
        if self.per_second <= 0:
            return False
        now = time.monotonic()
        self._level = min(self._capacity, self._level + (now - self._updated) * self.per_second)
        self._updated = now
        if self._level < 1.0:
            return False
        self._level -= 1.0
        return True


class AttemptSpan:
    """One backend attempt: the headers that carry its trace context, and its end."""

    __slots__ = ("_span", "headers")

    def __init__(self, span: Span | None, headers: Mapping[str, str]) -> None:
        self._span = span
        self.headers = headers

    def end(self, outcome: str) -> None:
        span = self._span
        if span is None:
            return
        span.set_attribute(ATTEMPT_OUTCOME, outcome)
        if outcome.isdigit():
            span.set_attribute(STATUS, int(outcome))
        if not (outcome.isdigit() and int(outcome) < 400):
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - traced requests only

            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute(ERROR_TYPE, outcome)
        span.end()
        self._span = None


class _StageSpan:
    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if kind is not None and issubclass(kind, Exception):
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - traced requests only

            self._span.set_status(Status(StatusCode.ERROR))
            self._span.set_attribute(ERROR_TYPE, getattr(exc, "code", None) or kind.__name__)
        self._span.end()


class RequestTrace:
    """One request's trace. Inert (no spans) unless the request was picked for tracing."""

    __slots__ = ("_context", "_method", "_root", "_tracer", "incoming", "trace_id")

    def __init__(
        self,
        incoming: Mapping[str, str],
        tracer: Tracer | None = None,
        root: Span | None = None,
        context: Any = None,
        method: str = "POST",
    ) -> None:
        self.incoming = incoming  # the caller's trace context, passed on when this request is not traced
        self._tracer = tracer
        self._root = root
        self._context = context
        self._method = method
        # Kept after the trace ends, for the request's log line.
        self.trace_id = f"{root.get_span_context().trace_id:032x}" if root is not None else None

    @property
    def recording(self) -> bool:
        return self.trace_id is not None

    def stage(self, name: str) -> AbstractContextManager[None]:
        """A span around one stage of the pipeline (auth, limits, cache, stream)."""
        if self._tracer is None:
            return _NOOP
        return _StageSpan(self._tracer.start_span(name, context=self._context))

    def attempt(self, backend: str, deployment: str, operation: str, endpoint: str) -> AttemptSpan:
        """A client span for one backend attempt, and the `traceparent` that makes the backend's spans its children."""
        if self._tracer is None:
            return AttemptSpan(None, self.incoming) if self.incoming else _NO_ATTEMPT
        from opentelemetry.trace import SpanKind  # noqa: PLC0415 - traced requests only

        name = f"{GEN_AI_OPERATIONS.get(operation, operation)} {deployment}"
        attributes = {
            BACKEND: backend,
            DEPLOYMENT: deployment,
            OPERATION: GEN_AI_OPERATIONS.get(operation, operation),
            PROVIDER: PROVIDER_NAME,
            MODEL: deployment,
            "http.request.method": "POST",
            "server.address": urlsplit(endpoint).hostname or endpoint,
        }
        span = self._tracer.start_span(name, context=self._context, kind=SpanKind.CLIENT, attributes=attributes)
        ctx = span.get_span_context()
        headers = {"traceparent": format_traceparent(ctx.trace_id, ctx.span_id, sampled=True)}
        if "tracestate" in self.incoming:
            headers["tracestate"] = self.incoming["tracestate"]
        return AttemptSpan(span, headers)

    def finish(self, record: RequestRecord, overhead: float, *, log_prompts: bool) -> None:
        root = self._root
        if root is None:
            return
        self._root = None
        operation = GEN_AI_OPERATIONS.get(record.operation, record.operation)
        # The server span is named by method and operation (a bounded set); the deployment is an attribute.
        root.update_name(f"{self._method} {record.operation}")
        attributes: dict[str, str | int | float | bool] = {
            STATUS: record.status,
            OUTCOME: record.outcome.value,
            OPERATION: operation,
            PROVIDER: PROVIDER_NAME,
            STREAMED: "true" if record.streamed else "false",
            CACHE: CACHE_STATES.get(record.cache or "", "off"),
            SPAN_OVERHEAD_MS: round(overhead * 1000, 3),
            SPAN_REQUEST_ID: record.request_id,
        }
        if record.caller is not None:
            attributes[SUBSCRIPTION_ID] = record.caller.subscription_id
            attributes[SUBSCRIPTION_NAME] = record.caller.subscription_name
        if record.deployment:
            attributes[DEPLOYMENT] = attributes[MODEL] = record.deployment
        if record.backend:
            attributes[BACKEND] = record.backend
        if record.region:
            attributes[REGION] = record.region
        if record.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = record.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = record.usage.completion_tokens
        if record.error:
            attributes[ERROR_TYPE] = record.error
        if log_prompts and record.prompt:
            attributes["gen_ai.input.messages"] = record.prompt
        root.set_attributes(attributes)
        if record.status >= 500:
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - traced requests only

            root.set_status(Status(StatusCode.ERROR))
        root.end()


INERT = RequestTrace({})
_NO_ATTEMPT = AttemptSpan(None, {})
_current: contextvars.ContextVar[RequestTrace] = contextvars.ContextVar("gateway_trace", default=INERT)


def current() -> RequestTrace:
    """The trace of the request being served in this context (inert outside one)."""
    return _current.get()


def start(request: GatewayRequest, tracer: Tracer | None, budget: TraceBudget) -> RequestTrace:
    """Begin a request's trace (a span tree only if there is a tracer and the budget allows) and make it `current()`."""
    headers = request.headers
    incoming: Mapping[str, str] = {}
    parent = None
    traceparent = headers.get("traceparent")
    if traceparent is not None:
        parent = parse_traceparent(traceparent)
        if parent is not None:
            incoming = {"traceparent": traceparent.strip()}
            if tracestate := headers.get("tracestate"):
                incoming["tracestate"] = tracestate
    if tracer is None or not budget.take():
        trace = RequestTrace(incoming) if incoming else INERT
    else:
        trace = _traced(tracer, request, incoming, parent)
    _current.set(trace)
    return trace


def _traced(
    tracer: Tracer,
    request: GatewayRequest,
    incoming: Mapping[str, str],
    parent: tuple[int, int, int] | None,
) -> RequestTrace:
    from opentelemetry import trace as otel  # noqa: PLC0415 - traced requests only
    from opentelemetry.trace.span import TraceState  # noqa: PLC0415

    context = None
    if parent is not None:
        state = TraceState.from_header([incoming["tracestate"]]) if "tracestate" in incoming else TraceState()
        flags = otel.TraceFlags(parent[2])
        remote = otel.SpanContext(parent[0], parent[1], is_remote=True, trace_flags=flags, trace_state=state)
        context = otel.set_span_in_context(otel.NonRecordingSpan(remote))
    root = tracer.start_span(
        request.method,
        context=context,
        kind=otel.SpanKind.SERVER,
        attributes={"http.request.method": request.method, "url.path": request.path},
    )
    return RequestTrace(incoming, tracer, root, otel.set_span_in_context(root), request.method)
