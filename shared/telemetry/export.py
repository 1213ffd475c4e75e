"""Where metrics and traces leave through OpenTelemetry: metric readers, span exporters, Application Insights.

OpenTelemetry metric readers (`attach`) collect the in-process totals: each
collection turns them into the SDK's `MetricsData` (delta or cumulative, as
the reader wants). In Azure a `PeriodicExportingMetricReader` hands them to
Application Insights' exporter every minute; tests attach an
`InMemoryMetricReader`.

Application Insights (APPLICATIONINSIGHTS_CONNECTION_STRING) is set up in a
background thread: the SDK and the Azure Monitor exporter load there, never
on a request's path or at import. With
`APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD;ClientId=...`
the exporter authenticates with that managed identity (`entra_credential`).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.telemetry.names import METRICS, Key, MetricSpec

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader, MetricsData
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from shared.config import Settings
    from shared.telemetry.aggregate import Snapshot, Totals

log = logging.getLogger("gateway.telemetry")


class Exporters:
    """The OpenTelemetry side of one gateway's telemetry: attached readers, the tracer, and their shutdown."""

    def __init__(self, settings: Settings, totals: Totals, *, instance_id: str = "") -> None:
        self._settings = settings
        self._totals = totals
        self._instance_id = instance_id
        self._started_ns = time.time_ns()
        self._readers: list[tuple[MetricReader, bool]] = []
        self._owned_readers: list[MetricReader] = []
        self._delta_ns = self._started_ns
        self._delta_seen: Snapshot | None = None
        self.tracer: Tracer | None = None  # set once tracing is installed; read by every request's start
        self._tracer_provider: Any = None
        self._resource: Any = None
        self.ready = threading.Event()  # set once the Application Insights exporter is set up (or failed)

    # --- metrics --------------------------------------------------------------------------------

    def attach(self, reader: MetricReader, *, delta: bool = False) -> None:
        """Let an OpenTelemetry metric reader collect the totals (cumulative, or delta for one reader)."""
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

    # --- traces and Application Insights --------------------------------------------------------

    def install_tracing(self, exporter_for: Callable[[TracerProvider], SpanExporter]) -> None:
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - tracing only
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON  # noqa: PLC0415

        # The budget has already picked the request: the SDK records every span it is asked for.
        provider = TracerProvider(sampler=ALWAYS_ON, resource=self._otel_resource())
        provider.add_span_processor(BatchSpanProcessor(exporter_for(provider)))
        self._tracer_provider = provider
        self.tracer = provider.get_tracer("shared.telemetry")

    def start_azure_monitor(self, *, traces: bool) -> None:
        """Load the Azure Monitor exporter and start exporting to it (blocking: run it in a background thread)."""
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
            if traces:
                # Our provider is not the global one: the exporter reads the resource from the one it is given.
                self.install_tracing(lambda provider: AzureMonitorTraceExporter(tracer_provider=provider, **options))
            # The exporter's modules are ~25,000 long-lived objects that every full garbage collection
            # would walk again (measured: a full collection 16 -> 38 ms). Objects alive now are set aside.
            gc.freeze()
            log.info("exporting metrics and traces to Application Insights")
        except Exception:  # telemetry that cannot start must not stop the gateway serving
            log.exception("could not set up the Application Insights exporter; metrics stay in process")
        finally:
            self.ready.set()

    def force_flush(self) -> None:
        """Export what is pending now (blocking: call it from a thread)."""
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()
        for reader in self._owned_readers:
            reader.force_flush()

    def shutdown(self) -> None:
        """The last export before the process ends (blocking: call it from a thread)."""
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


def _attributes(spec: MetricSpec, key: Key) -> dict[str, str | int]:
    # Empty values are dimensions that do not apply (no backend answered, no subscription): left out.
    return {name: value for name, value in zip(spec.attributes, key, strict=True) if value != ""}
