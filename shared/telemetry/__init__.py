"""Metrics and traces: what each request, attempt, breaker and probe adds to them, and where they go.

One room per concept:

* `names`: every metric's name, unit, buckets and dimensions (pure data).
* `aggregate`: the in-process totals each finished request adds to (a few
  dictionary updates, no OpenTelemetry call), and snapshots of them.
* `tracing`: the per-instance trace budget, W3C `traceparent`, a request's
  span tree and its backend attempts' spans (`current()` for the proxy).
* `export`: OpenTelemetry metric readers and span exporters, Application
  Insights set up in a background thread, its Entra credential.
* `prometheus`: the totals as Prometheus text for `GET /metrics`.
* `facade`: `Telemetry`, the one object the gateway holds.

Metrics leave the process three ways, all built on the same cumulative
totals: OpenTelemetry readers, Prometheus text, or nowhere (with no exporter
and no endpoint the meter never calls `record`, and a request pays for one
context-variable write). Nothing here imports the OpenTelemetry SDK or the
Azure Monitor exporter at import time.
"""

from shared.telemetry.facade import Telemetry
from shared.telemetry.tracing import INERT, AttemptSpan, RequestTrace, current

__all__ = ["INERT", "AttemptSpan", "RequestTrace", "Telemetry", "current"]
