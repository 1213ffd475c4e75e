"""The in-process totals: what each finished request, probe round and breaker transition adds, and snapshots of them.

Metrics are aggregated here, in plain dicts keyed by attribute values, so a
request costs a few dictionary updates and no OpenTelemetry call. Every way
out (OpenTelemetry readers in `export`, Prometheus text in `prometheus`)
reads the same cumulative totals through `Totals.snapshot`.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.outcomes import ABANDONED_OUTCOMES
from shared.telemetry.names import (
    CACHE_STATES,
    DURATION_BUCKETS,
    GEN_AI_OPERATIONS,
    METRICS,
    OVERHEAD_BUCKETS,
    PROVIDER_NAME,
    TOKEN_BUCKETS,
    Key,
)

if TYPE_CHECKING:
    from shared.breaker import Status
    from shared.outcomes import RequestRecord


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


class Totals:
    """Every metric's running totals. Written from the event loop, read by exporters' threads: one lock."""

    def __init__(self, deployments: frozenset[str], regions: Mapping[str, str]) -> None:
        self.lock = threading.Lock()
        self.sums: dict[str, dict[Key, float]] = {m.name: {} for m in METRICS if m.kind == "counter"}
        self.histograms: dict[str, dict[Key, _Histogram]] = {m.name: {} for m in METRICS if m.kind == "histogram"}
        self._deployments = deployments
        self._regions = regions

    def add_request(self, r: RequestRecord) -> float:
        """Count one finished request; returns the gateway's own time in it (its overhead), for its trace."""
        caller = r.caller
        sub_id, sub_name = (caller.subscription_id, caller.subscription_name) if caller is not None else ("", "")
        # Only configured deployments become dimensions: a caller cannot mint new time series.
        deployment = r.deployment if r.deployment in self._deployments else ""
        cache = CACHE_STATES.get(r.cache or "", "off")
        streamed = "true" if r.streamed else "false"
        where = (deployment, r.backend or "", r.region or "", cache, streamed)
        outcome = r.outcome.value
        backend_seconds = 0.0
        for attempt in r.attempts:
            backend_seconds += attempt[2]
        overhead = max(0.0, (r.ready_seconds or r.seconds) - backend_seconds)
        with self.lock:
            sums, histograms = self.sums, self.histograms
            _count(sums["gateway.requests"], (outcome, r.status, sub_id, sub_name, *where), 1)
            operation = GEN_AI_OPERATIONS.get(r.operation)
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
                    if answer in ABANDONED_OUTCOMES:
                        where_attempt = key[:3]
                        _count(sums["gateway.backend.abandoned"], where_attempt, 1)
                        _count(sums["gateway.backend.abandoned_tokens"], where_attempt, r.prompt_estimate)
            if r.cache is not None:
                _count(sums["gateway.cache.lookups"], (cache, r.cache_check, deployment, sub_id, sub_name), 1)
                if r.tokens_saved:
                    _count(sums["gateway.cache.tokens_saved"], (deployment, sub_id, sub_name), r.tokens_saved)
        return overhead

    def add_probes(self, report: Mapping[str, Mapping[str, object]]) -> None:
        """Count one round of health probes (`shared.probe.probe_all`'s report)."""
        histograms = self.histograms["gateway.probe.duration"]
        with self.lock:
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

    def add_transitions(self, transitions: Iterable[tuple[str, Status, Status]]) -> None:
        """Count circuit-breaker state changes (`BreakerBoard.transitions`, keyed `backend|deployment`)."""
        sums = self.sums["gateway.breaker.transitions"]
        with self.lock:
            for key, old, new in transitions:
                backend, _, deployment = key.partition("|")
                _count(sums, (backend, deployment, old.value, new.value), 1)

    def add_budget_alert(self, subscription_id: str, subscription_name: str, threshold: int) -> None:
        with self.lock:
            _count(self.sums["gateway.budget.alerts"], (subscription_id, subscription_name, threshold), 1)

    def count(self, name: str, key: Key, amount: float = 1) -> None:
        """Add to one counter's time series (the audit log's and Content Safety's counts)."""
        with self.lock:
            _count(self.sums[name], key, amount)

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


def _count(points: dict[Key, float], key: Key, amount: float) -> None:
    points[key] = points.get(key, 0) + amount


def _observe(points: dict[Key, _Histogram], bounds: tuple[float, ...], key: Key, value: float) -> None:
    histogram = points.get(key)
    if histogram is None:
        histogram = points[key] = _Histogram(len(bounds) + 1)
    histogram.add(bisect_left(bounds, value), value)
