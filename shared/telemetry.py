"""Metrics and traces: what each request, attempt, breaker and probe adds to them, and where they go.

Metrics are aggregated here, in plain dicts keyed by attribute values, so a
request costs a few dictionary updates and no OpenTelemetry call. They leave
the process three ways, all built on the same cumulative totals:

* OpenTelemetry metric readers (`attach`): each collection turns the totals
  into the SDK's `MetricsData` (delta or cumulative, as the reader wants). In
  Azure a `PeriodicExportingMetricReader` hands them to Application
  Insights' exporter every minute; tests attach an `InMemoryMetricReader`.
* Prometheus text for `GET /metrics` (`prometheus()`), with no OpenTelemetry
  import at all.
* nowhere: with no exporter and no endpoint, the meter never calls
  `record`, and a request pays for one context-variable write.

Names follow the OpenTelemetry GenAI semantic conventions where they exist
(`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`), the rest
are `gateway.*`. Dimensions carry the subscription's id and name, never its
key, and no prompt text.

Traces use the OpenTelemetry SDK, but only for the requests the budget picks
(GATEWAY_TRACES_PER_SECOND per instance), so tracing costs nothing per
request beyond the decision. A traced request gets a server span with a
child per stage (`stage()`) and a client span per backend attempt
(`attempt()`, found through a context variable so the proxy need not carry
it), and the attempt's W3C `traceparent` goes to the backend. An untraced
request passes the caller's own `traceparent` on unchanged.

Application Insights (APPLICATIONINSIGHTS_CONNECTION_STRING) is set up in a
background thread: the SDK and the Azure Monitor exporter load there, never
on a request's path or at import. With
`APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD;ClientId=...`
the exporter authenticates with that managed identity.
"""

from __future__ import annotations

import contextvars
import gc
import logging
import math
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader, MetricsData
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from shared.breaker import BreakerBoard
    from shared.config import Settings
    from shared.meter import RequestRecord
    from shared.models import GatewayRequest

log = logging.getLogger("gateway.telemetry")

# --- names ------------------------------------------------------------------------------------

# Attribute keys. GenAI and HTTP ones are the semantic conventions'; the rest are the gateway's own.
OPERATION = "gen_ai.operation.name"  # "chat" | "embeddings"
PROVIDER = "gen_ai.provider.name"
MODEL = "gen_ai.request.model"  # the deployment the caller named
TOKEN_TYPE = "gen_ai.token.type"  # noqa: S105 - a metric dimension ("input" | "output"), not a secret
ERROR_TYPE = "error.type"
STATUS = "http.response.status_code"
REGION = "cloud.region"
SUBSCRIPTION_ID = "gateway.subscription.id"
SUBSCRIPTION_NAME = "gateway.subscription.name"
DEPLOYMENT = "gateway.deployment"
BACKEND = "gateway.backend"
CACHE = "gateway.cache.status"  # "hit" | "miss" | "bypass" | "off"
STREAMED = "gateway.streamed"  # "true" | "false"
OUTCOME = "gateway.outcome"  # shared.meter.Outcome values
ATTEMPT_OUTCOME = "gateway.attempt.outcome"  # the backend's status code, or "timeout", "connect_error", ...
BREAKER_FROM = "gateway.breaker.from"
BREAKER_TO = "gateway.breaker.to"
PROBE_OK = "gateway.probe.ok"

PROVIDER_NAME = "azure.ai.openai"
_GEN_AI_OPERATIONS = {"chat/completions": "chat", "embeddings": "embeddings"}
_CACHE_STATES = {"HIT": "hit", "MISS": "miss", "BYPASS": "bypass"}

# The semantic conventions' advice for GenAI histograms.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# The gateway's own time is counted in tenths of milliseconds.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

_CALLER = (SUBSCRIPTION_ID, SUBSCRIPTION_NAME)
_WHERE = (DEPLOYMENT, BACKEND, REGION, CACHE, STREAMED)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str  # "counter" | "histogram"
    unit: str
    description: str
    attributes: tuple[str, ...]  # the order of the values in every key recorded under this metric
    buckets: tuple[float, ...] = ()


TOKEN_USAGE = MetricSpec(
    "gen_ai.client.token.usage",
    "histogram",
    "{token}",
    "Tokens used per request, by type (input: prompt, output: completion), as the backend reported them.",
    (OPERATION, PROVIDER, MODEL, TOKEN_TYPE, *_CALLER, *_WHERE),
    TOKEN_BUCKETS,
)
OPERATION_DURATION = MetricSpec(
    "gen_ai.client.operation.duration",
    "histogram",
    "s",
    "Time from the request's arrival to the end of its response (a stream's last event).",
    (OPERATION, PROVIDER, MODEL, ERROR_TYPE, *_CALLER, *_WHERE),
    DURATION_BUCKETS,
)
REQUESTS = MetricSpec(
    "gateway.requests",
    "counter",
    "{request}",
    "Requests by outcome: success, cache_hit, client_error, unauthorized, throttled, quota_exceeded, backend_error.",
    (OUTCOME, STATUS, *_CALLER, *_WHERE),
)
ATTEMPTS = MetricSpec(
    "gateway.backend.attempts",
    "counter",
    "{attempt}",
    "Calls to backends, by the backend's answer (status code) or the failure (timeout, connect_error, ...).",
    (BACKEND, DEPLOYMENT, REGION, ATTEMPT_OUTCOME),
)
FAILOVERS = MetricSpec(
    "gateway.backend.failovers",
    "counter",
    "{failover}",
    "Attempts that failed and were retried on another backend, by the backend that failed and why.",
    (BACKEND, DEPLOYMENT, REGION, ATTEMPT_OUTCOME),
)
BREAKER_TRANSITIONS = MetricSpec(
    "gateway.breaker.transitions",
    "counter",
    "{transition}",
    "Circuit-breaker state changes this instance made or learnt from shared state.",
    (BACKEND, DEPLOYMENT, BREAKER_FROM, BREAKER_TO),
)
PROBE_DURATION = MetricSpec(
    "gateway.probe.duration",
    "histogram",
    "s",
    "Latency of the health probe's call to each backend deployment, and whether it found it healthy.",
    (BACKEND, DEPLOYMENT, REGION, PROBE_OK, STATUS),
    DURATION_BUCKETS,
)
CACHE_LOOKUPS = MetricSpec(
    "gateway.cache.lookups",
    "counter",
    "{lookup}",
    "Semantic-cache lookups by result (hit, miss, bypass).",
    (CACHE, DEPLOYMENT, *_CALLER),
)
TOKENS_SAVED = MetricSpec(
    "gateway.cache.tokens_saved",
    "counter",
    "{token}",
    "Tokens a backend would have used for the answers served from the cache.",
    (DEPLOYMENT, *_CALLER),
)
OVERHEAD = MetricSpec(
    "gateway.overhead",
    "histogram",
    "s",
    "Time spent in the gateway, excluding waits on backends (for streams: until the first event was ready).",
    (DEPLOYMENT, OUTCOME, CACHE, STREAMED),
    OVERHEAD_BUCKETS,
)

METRICS: tuple[MetricSpec, ...] = (
    TOKEN_USAGE,
    OPERATION_DURATION,
    REQUESTS,
    ATTEMPTS,
    FAILOVERS,
    BREAKER_TRANSITIONS,
    PROBE_DURATION,
    CACHE_LOOKUPS,
    TOKENS_SAVED,
    OVERHEAD,
)
# Attributes of the request span that the operators' workbook reads (Application Insights `requests`).
SPAN_OVERHEAD_MS = "gateway.overhead_ms"
SPAN_REQUEST_ID = "gateway.request_id"

Key = tuple[str | int, ...]


# --- aggregation ------------------------------------------------------------------------------


class _Histogram:
    """Explicit-bucket histogram of one attribute set: cumulative totals, and min/max since the last delta."""

    __slots__ = ("count", "counts", "interval_max", "interval_min", "max", "min", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.interval_min = math.inf
        self.interval_max = -math.inf

    def add(self, index: int, value: float) -> None:
        self.counts[index] += 1
        self.count += 1
        self.sum += value
        # All-time min/max fold the interval's in when it is reset (or read): one pair to keep per value.
        self.interval_min = min(self.interval_min, value)
        self.interval_max = max(self.interval_max, value)


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    counts: tuple[int, ...]  # one more than the bounds: the last counts values above every bound
    count: int
    sum: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cumulative totals at one moment, per metric name and attribute values."""

    sums: Mapping[str, Mapping[Key, float]]
    histograms: Mapping[str, Mapping[Key, HistogramPoint]]


class _Totals:
    """Every metric's running totals. Written from the event loop, read by exporters' threads: one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sums: dict[str, dict[Key, float]] = {m.name: {} for m in METRICS if m.kind == "counter"}
        self.histograms: dict[str, dict[Key, _Histogram]] = {m.name: {} for m in METRICS if m.kind == "histogram"}

    def snapshot(self, *, reset_interval: bool = False) -> Snapshot:
        with self.lock:
            sums = {name: dict(points) for name, points in self.sums.items()}
            histograms: dict[str, dict[Key, HistogramPoint]] = {}
            for name, points in self.histograms.items():
                copied = {}
                for key, h in points.items():
                    h.min, h.max = min(h.min, h.interval_min), max(h.max, h.interval_max)
                    lo, hi = (h.interval_min, h.interval_max) if reset_interval else (h.min, h.max)
                    copied[key] = HistogramPoint(tuple(h.counts), h.count, h.sum, lo, hi)
                    if reset_interval:
                        h.interval_min, h.interval_max = math.inf, -math.inf
                histograms[name] = copied
        return Snapshot(sums, histograms)


# --- traces -----------------------------------------------------------------------------------

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

        name = f"{_GEN_AI_OPERATIONS.get(operation, operation)} {deployment}"
        attributes = {
            BACKEND: backend,
            DEPLOYMENT: deployment,
            OPERATION: _GEN_AI_OPERATIONS.get(operation, operation),
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
        operation = _GEN_AI_OPERATIONS.get(record.operation, record.operation)
        # The server span is named by method and operation (a bounded set); the deployment is an attribute.
        root.update_name(f"{self._method} {record.operation}")
        attributes: dict[str, str | int | float | bool] = {
            STATUS: record.status,
            OUTCOME: record.outcome.value,
            OPERATION: operation,
            PROVIDER: PROVIDER_NAME,
            STREAMED: "true" if record.streamed else "false",
            CACHE: _CACHE_STATES.get(record.cache or "", "off"),
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


# --- the telemetry of one gateway -------------------------------------------------------------


class Telemetry:
    """Metrics for every request, and traces for a budgeted few; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        instance_id: str = "",
        breakers: BreakerBoard | None = None,
        metric_readers: Sequence[MetricReader] = (),
        span_exporter: SpanExporter | None = None,
        traces_per_second: float | None = None,
    ) -> None:
        self._settings = settings
        self._instance_id = instance_id
        self._breakers = breakers
        self._deployments = settings.deployments
        self._regions = {b.name: b.region or "" for b in settings.backends}
        self._log_prompts = settings.log_prompts
        azure = settings.appinsights_connection_string is not None
        # Metrics are counted when something will read them; otherwise the meter is not even called.
        self.enabled = azure or settings.metrics_endpoint or bool(metric_readers)
        self._totals = _Totals()
        self._started_ns = time.time_ns()
        self._readers: list[tuple[MetricReader, bool]] = []
        self._owned_readers: list[MetricReader] = []
        self._delta_ns = self._started_ns
        self._delta_seen: Snapshot | None = None
        self._tracer: Tracer | None = None
        self._tracer_provider: Any = None
        self._budget = TraceBudget(settings.traces_per_second if traces_per_second is None else traces_per_second)
        self._resource: Any = None
        self.exporter_ready = threading.Event()  # set once the Application Insights exporter is set up (or failed)
        for reader in metric_readers:
            self.attach(reader)
        if span_exporter is not None:
            self._install_tracing(lambda _: span_exporter)
        if azure:
            # The SDK and the exporter take hundreds of milliseconds to import: never on a request's path.
            threading.Thread(target=self._start_azure_monitor, name="telemetry-setup", daemon=True).start()

    # --- per request ----------------------------------------------------------------------------

    def start(self, request: GatewayRequest) -> RequestTrace:
        """Begin a request's trace (a span tree only if the budget allows) and make it `current()`."""
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
        tracer = self._tracer
        if tracer is None or not self._budget.take():
            trace = RequestTrace(incoming) if incoming else INERT
        else:
            trace = self._traced(tracer, request, incoming, parent)
        _current.set(trace)
        return trace

    def _traced(
        self,
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

    def record(self, r: RequestRecord) -> None:
        """Count one finished request (the meter calls this exactly once per request)."""
        caller = r.caller
        sub_id, sub_name = (caller.subscription_id, caller.subscription_name) if caller is not None else ("", "")
        # Only configured deployments become dimensions: a caller cannot mint new time series.
        deployment = r.deployment if r.deployment in self._deployments else ""
        cache = _CACHE_STATES.get(r.cache or "", "off")
        streamed = "true" if r.streamed else "false"
        where = (deployment, r.backend or "", r.region or "", cache, streamed)
        outcome = r.outcome.value
        backend_seconds = 0.0
        for attempt in r.attempts:
            backend_seconds += attempt[2]
        overhead = max(0.0, (r.ready_seconds or r.seconds) - backend_seconds)
        totals = self._totals
        with totals.lock:
            sums, histograms = totals.sums, totals.histograms
            _count(sums["gateway.requests"], (outcome, r.status, sub_id, sub_name, *where), 1)
            operation = _GEN_AI_OPERATIONS.get(r.operation)
            if operation is not None:
                gen_ai = (operation, PROVIDER_NAME, deployment)
                if r.usage is not None and outcome != "cache_hit":
                    tokens = histograms["gen_ai.client.token.usage"]
                    _observe(tokens, TOKEN_BUCKETS, (*gen_ai, "input", sub_id, sub_name, *where), r.usage.prompt_tokens)
                    _observe(
                        tokens, TOKEN_BUCKETS, (*gen_ai, "output", sub_id, sub_name, *where), r.usage.completion_tokens
                    )
                error = (r.error or outcome) if r.status >= 400 or outcome == "backend_error" else ""
                _observe(
                    histograms["gen_ai.client.operation.duration"],
                    DURATION_BUCKETS,
                    (*gen_ai, error, sub_id, sub_name, *where),
                    r.seconds,
                )
            _observe(histograms["gateway.overhead"], OVERHEAD_BUCKETS, (deployment, outcome, cache, streamed), overhead)
            if r.attempts:
                attempts, failovers, regions = (
                    sums["gateway.backend.attempts"],
                    sums["gateway.backend.failovers"],
                    self._regions,
                )
                last = len(r.attempts) - 1
                for i, (backend, answer, _) in enumerate(r.attempts):
                    key = (backend, deployment, regions.get(backend, ""), answer)
                    _count(attempts, key, 1)
                    if i < last:  # every attempt but the last failed and moved on to another backend
                        _count(failovers, key, 1)
            if r.cache is not None:
                _count(sums["gateway.cache.lookups"], (cache, deployment, sub_id, sub_name), 1)
                if r.tokens_saved:
                    _count(sums["gateway.cache.tokens_saved"], (deployment, sub_id, sub_name), r.tokens_saved)
        if self._breakers is not None and self._breakers.transitions:
            self._drain_transitions()
        r.trace.finish(r, overhead, log_prompts=self._log_prompts)

    def record_probes(self, report: Mapping[str, Mapping[str, object]]) -> None:
        """Count one round of health probes (`shared.probe.probe_all`'s report)."""
        histograms = self._totals.histograms["gateway.probe.duration"]
        with self._totals.lock:
            for key, outcome in report.items():
                backend, _, deployment = key.partition("|")
                latency = outcome.get("latency_ms")
                status = outcome.get("status")
                values = (
                    backend,
                    deployment,
                    self._regions.get(backend, ""),
                    "true" if outcome.get("ok") else "false",
                    status if isinstance(status, int) else 0,
                )
                seconds = float(latency) / 1000 if isinstance(latency, int | float) else 0.0
                _observe(histograms, DURATION_BUCKETS, values, seconds)
        self._drain_transitions()

    def _drain_transitions(self) -> None:
        board = self._breakers
        if board is None:
            return
        # Appends happen on the event loop; popping a counted prefix keeps any that land meanwhile.
        pending = [board.transitions.popleft() for _ in range(len(board.transitions))]
        if not pending:
            return
        sums = self._totals.sums["gateway.breaker.transitions"]
        with self._totals.lock:
            for key, old, new in pending:
                backend, _, deployment = key.partition("|")
                _count(sums, (backend, deployment, old.value, new.value), 1)

    # --- reading the totals ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        self._drain_transitions()
        return self._totals.snapshot()

    def prometheus(self) -> str:
        """Every metric's cumulative totals in the Prometheus text format (0.0.4)."""
        return render_prometheus(self.snapshot())

    def attach(self, reader: MetricReader, *, delta: bool = False) -> None:
        """Let an OpenTelemetry metric reader collect these metrics (cumulative, or delta for one reader)."""
        if delta and any(d for _, d in self._readers):
            raise ValueError("only one delta reader can be attached")
        self._readers.append((reader, delta))

        def collect(_: MetricReader, timeout_millis: object = None) -> MetricsData:
            return self._metrics_data(delta=delta)

        # The SDK's own MeterProvider registers readers this way; our totals take its place as the source.
        reader._set_collect_callback(collect)

    def _metrics_data(self, *, delta: bool) -> MetricsData:
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415 - exporters only
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
            MetricsData,
            NumberDataPoint,
            ResourceMetrics,
            ScopeMetrics,
            Sum,
        )
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415

        now = time.time_ns()
        snap = self._totals.snapshot(reset_interval=delta)
        if delta:
            start, previous = self._delta_ns, self._delta_seen
            self._delta_ns, self._delta_seen = now, snap
            temporality = AggregationTemporality.DELTA
        else:
            start, previous = self._started_ns, None
            temporality = AggregationTemporality.CUMULATIVE
        metrics = []
        for spec in METRICS:
            if spec.kind == "counter":
                before = previous.sums[spec.name] if previous else {}
                points = [
                    NumberDataPoint(_attributes(spec, key), start, now, value - before.get(key, 0))
                    for key, value in snap.sums[spec.name].items()
                    if value - before.get(key, 0) or not delta
                ]
                data: Sum | Histogram = Sum(points, temporality, is_monotonic=True)
            else:
                old = previous.histograms[spec.name] if previous else {}
                hist_points = []
                for key, point in snap.histograms[spec.name].items():
                    seen = old.get(key)
                    count = point.count - (seen.count if seen else 0)
                    if delta and not count:
                        continue
                    counts = [c - s for c, s in zip(point.counts, seen.counts, strict=True)] if seen else point.counts
                    hist_points.append(
                        HistogramDataPoint(
                            _attributes(spec, key),
                            start,
                            now,
                            count,
                            point.sum - (seen.sum if seen else 0.0),
                            list(counts),
                            list(spec.buckets),
                            point.min,
                            point.max,
                        )
                    )
                data = Histogram(hist_points, temporality)
            if data.data_points:
                metrics.append(Metric(spec.name, spec.description, spec.unit, data))
        scope = InstrumentationScope("shared.telemetry")
        return MetricsData([ResourceMetrics(self._otel_resource(), [ScopeMetrics(scope, metrics, "")], "")])

    def _otel_resource(self) -> Any:
        if self._resource is None:
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - exporters only

            attributes = {"service.name": self._settings.service_name}
            if self._instance_id:
                attributes["service.instance.id"] = self._instance_id
            self._resource = Resource.create(attributes)
        return self._resource

    # --- exporters ------------------------------------------------------------------------------

    def _install_tracing(self, exporter_for: Callable[[TracerProvider], SpanExporter]) -> None:
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - tracing only
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON  # noqa: PLC0415

        # The budget has already picked the request: the SDK records every span it is asked for.
        provider = TracerProvider(sampler=ALWAYS_ON, resource=self._otel_resource())
        provider.add_span_processor(BatchSpanProcessor(exporter_for(provider)))
        self._tracer_provider = provider
        self._tracer = provider.get_tracer("shared.telemetry")

    def _start_azure_monitor(self) -> None:
        try:
            from azure.monitor.opentelemetry.exporter import (  # noqa: PLC0415 - off the request path
                AzureMonitorMetricExporter,
                AzureMonitorTraceExporter,
            )
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415

            options: dict[str, Any] = {"connection_string": self._settings.appinsights_connection_string}
            credential = entra_credential(self._settings)
            if credential is not None:
                options["credential"] = credential
            reader = PeriodicExportingMetricReader(AzureMonitorMetricExporter(**options))
            self.attach(reader, delta=True)  # Application Insights sums what each export sends
            self._owned_readers.append(reader)
            if self._budget.per_second > 0:
                # Our provider is not the global one: the exporter reads the resource from the one it is given.
                self._install_tracing(lambda provider: AzureMonitorTraceExporter(tracer_provider=provider, **options))
            # The exporter's modules are ~25,000 long-lived objects that every full garbage collection
            # would walk again (measured: a full collection 16 -> 38 ms). Objects alive now are set aside.
            gc.freeze()
            log.info("exporting metrics and traces to Application Insights")
        except Exception:  # telemetry that cannot start must not stop the gateway serving
            log.exception("could not set up the Application Insights exporter; metrics stay in process")
        finally:
            self.exporter_ready.set()

    def force_flush(self) -> None:
        """Export what is pending now (blocking: call it from a thread)."""
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()
        for reader in self._owned_readers:
            reader.force_flush()

    def shutdown(self) -> None:
        """The last export before the process ends (blocking: call it from a thread)."""
        self._drain_transitions()
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        for reader in self._owned_readers:
            reader.shutdown()
        self._owned_readers.clear()


def entra_credential(settings: Settings) -> Any:
    """The managed identity for Application Insights when its authentication string asks for Entra (AAD), else None.

    `Authorization=AAD;ClientId=<id>` names a user-assigned identity; without
    a ClientId, AZURE_CLIENT_ID does, and without either the system-assigned one.
    """
    fields = dict(part.split("=", 1) for part in (settings.appinsights_authentication or "").split(";") if "=" in part)
    if fields.get("Authorization", "").strip().upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential  # noqa: PLC0415 - Azure only

    client_id = fields.get("ClientId") or settings.managed_identity_client_id
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def _count(points: dict[Key, float], key: Key, amount: float) -> None:
    points[key] = points.get(key, 0) + amount


def _observe(points: dict[Key, _Histogram], bounds: tuple[float, ...], key: Key, value: float) -> None:
    histogram = points.get(key)
    if histogram is None:
        histogram = points[key] = _Histogram(len(bounds) + 1)
    histogram.add(bisect_left(bounds, value), value)


def _attributes(spec: MetricSpec, key: Key) -> dict[str, str | int]:
    # Empty values are dimensions that do not apply (no backend answered, no subscription): left out.
    return {name: value for name, value in zip(spec.attributes, key, strict=True) if value != ""}


# --- Prometheus text --------------------------------------------------------------------------


def prometheus_name(spec: MetricSpec) -> str:
    """The OpenTelemetry-to-Prometheus name: dots to underscores, the unit as a suffix, `_total` for counters."""
    name = re.sub(r"[^A-Za-z0-9_:]", "_", spec.name)
    if spec.unit == "s":
        name += "_seconds"
    return name + "_total" if spec.kind == "counter" else name


def _label_value(value: str | int) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(spec: MetricSpec, key: Key, extra: str = "") -> str:
    pairs = [
        f'{re.sub(r"[^A-Za-z0-9_]", "_", name)}="{_label_value(value)}"'
        for name, value in zip(spec.attributes, key, strict=True)
        if value != ""
    ]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render_prometheus(snapshot: Snapshot) -> str:
    lines: list[str] = []
    for spec in METRICS:
        name = prometheus_name(spec)
        lines.append(f"# HELP {name} {spec.description}")
        lines.append(f"# TYPE {name} {spec.kind if spec.kind == 'histogram' else 'counter'}")
        if spec.kind == "counter":
            for key, value in sorted(snapshot.sums[spec.name].items(), key=_sort_key):
                lines.append(f"{name}{_labels(spec, key)} {_number(value)}")
            continue
        for key, point in sorted(snapshot.histograms[spec.name].items(), key=_sort_key):
            running = 0
            for bound, count in zip((*spec.buckets, math.inf), point.counts, strict=True):
                running += count
                lines.append(f"{name}_bucket{_labels(spec, key, f'le={_quoted(bound)}')} {running}")
            lines.append(f"{name}_sum{_labels(spec, key)} {_number(point.sum)}")
            lines.append(f"{name}_count{_labels(spec, key)} {point.count}")
    return "\n".join(lines) + "\n"


def _quoted(bound: float) -> str:
    return f'"{_number(bound)}"'


def _sort_key(item: tuple[Key, object]) -> tuple[str, ...]:
    return tuple(str(v) for v in item[0])


def iter_metric_names() -> Iterator[str]:
    """Every metric name this module emits (the workbook's queries are checked against these)."""
    for spec in METRICS:
        yield spec.name


def attribute_names() -> frozenset[str]:
    """Every dimension a metric can carry, and the request span's attributes the workbook reads."""
    names = {name for spec in METRICS for name in spec.attributes}
    return frozenset({*names, SPAN_OVERHEAD_MS, SPAN_REQUEST_ID})
