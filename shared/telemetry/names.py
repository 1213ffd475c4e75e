"""The metrics' names, units, buckets and dimensions, and the span attributes the workbook reads: pure data, a leaf.

Names follow the OpenTelemetry GenAI semantic conventions where they exist
(`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`), the rest
are `gateway.*`. Dimensions carry the subscription's id and name, never its
key, and no prompt text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
# A semantic candidate's verification: "pass", a shared.cache.verify reason, "unavailable"; "" when none was checked.
CACHE_CHECK = "gateway.cache.check"
STREAMED = "gateway.streamed"  # "true" | "false"
OUTCOME = "gateway.outcome"  # shared.outcomes.Outcome values
ATTEMPT_OUTCOME = "gateway.attempt.outcome"  # the backend's status code, or "timeout", "connect_error", ...
BREAKER_FROM = "gateway.breaker.from"
BREAKER_TO = "gateway.breaker.to"
PROBE_OK = "gateway.probe.ok"
BUDGET_THRESHOLD = "gateway.budget.threshold"  # percent of the budget a crossing alerted on
PROMPT_LOG_RESULT = "gateway.promptlog.result"  # "written" | "dropped" | "failed"
CONTENT_SAFETY_RESULT = "gateway.content_safety.result"  # "allowed" | "blocked" | "unavailable_open" | ...

PROVIDER_NAME = "azure.ai.openai"
# The semantic conventions' names; a Responses API call is a chat turn to them, a legacy completion a text_completion.
GEN_AI_OPERATIONS = {
    "chat/completions": "chat",
    "embeddings": "embeddings",
    "completions": "text_completion",
    "responses.create": "chat",
}
CACHE_STATES = {"HIT": "hit", "MISS": "miss", "BYPASS": "bypass"}

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


# One time series of a metric: the values of its spec's attributes, in that order ("" where one does not apply).
Key = tuple[str | int, ...]

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
    "Requests by outcome: success, cache_hit, client_error, unauthorized, throttled, quota_exceeded, backend_error, "
    "content_filtered, overloaded (shed by the gateway itself).",
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
ABANDONED = MetricSpec(
    "gateway.backend.abandoned",
    "counter",
    "{attempt}",
    "Attempts the gateway gave up on at a timeout after sending them; the backend may still complete and bill them.",
    (BACKEND, DEPLOYMENT, REGION),
)
ABANDONED_TOKENS = MetricSpec(
    "gateway.backend.abandoned_tokens",
    "counter",
    "{token}",
    "Prompt tokens (counted offline) of the attempts given up at a timeout: what they may cost if billed.",
    (BACKEND, DEPLOYMENT, REGION),
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
    "Semantic-cache lookups by result (hit, miss, bypass) and, for semantic candidates, the check that decided.",
    (CACHE, CACHE_CHECK, DEPLOYMENT, *_CALLER),
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
BUDGET_ALERTS = MetricSpec(
    "gateway.budget.alerts",
    "counter",
    "{alert}",
    "Budget thresholds crossed (once per threshold and period across instances, counted where it was claimed).",
    (*_CALLER, BUDGET_THRESHOLD),
)

PROMPT_LOG_RECORDS = MetricSpec(
    "gateway.promptlog.records",
    "counter",
    "{record}",
    "Audit-log records by result: written to storage, dropped (queue full), failed (storage refused the batch).",
    (PROMPT_LOG_RESULT,),
)
CONTENT_SAFETY_CHECKS = MetricSpec(
    "gateway.content_safety.checks",
    "counter",
    "{check}",
    "Content Safety checks by result: allowed, blocked, or the service unavailable and the request let through "
    "(unavailable_open) or refused (unavailable_closed).",
    (CONTENT_SAFETY_RESULT, DEPLOYMENT),
)

METRICS: tuple[MetricSpec, ...] = (
    TOKEN_USAGE,
    OPERATION_DURATION,
    REQUESTS,
    ATTEMPTS,
    FAILOVERS,
    ABANDONED,
    ABANDONED_TOKENS,
    BREAKER_TRANSITIONS,
    PROBE_DURATION,
    CACHE_LOOKUPS,
    TOKENS_SAVED,
    OVERHEAD,
    BUDGET_ALERTS,
    PROMPT_LOG_RECORDS,
    CONTENT_SAFETY_CHECKS,
)
# Attributes of the request span that the operators' workbook reads (Application Insights `requests`).
SPAN_OVERHEAD_MS = "gateway.overhead_ms"
SPAN_REQUEST_ID = "gateway.request_id"


def iter_metric_names() -> Iterator[str]:
    """Every metric name telemetry emits (the workbook's queries are checked against these)."""
    for spec in METRICS:
        yield spec.name


def attribute_names() -> frozenset[str]:
    """Every dimension a metric can carry, and the request span's attributes the workbook reads."""
    names = {name for spec in METRICS for name in spec.attributes}
    return frozenset({*names, SPAN_OVERHEAD_MS, SPAN_REQUEST_ID})
