"""`Telemetry`: the one object the gateway holds for metrics and traces; it wires totals, tracing and exporters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.telemetry.aggregate import Snapshot, Totals
from shared.telemetry.export import Exporters
from shared.telemetry.prometheus import render_prometheus
from shared.telemetry.tracing import RequestTrace, TraceBudget
from shared.telemetry.tracing import start as start_trace

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter

    from shared.breaker import BreakerBoard
    from shared.config import Settings
    from shared.models import GatewayRequest
    from shared.outcomes import RequestRecord


class Telemetry:
    """Metrics for every request, and traces for a budgeted few; see the package docstring."""

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
        self._breakers = breakers
        self._log_prompts = settings.log_prompts
        azure = settings.appinsights_connection_string is not None
        # Metrics are counted when something will read them; otherwise the meter is not even called.
        self.enabled = azure or settings.metrics_endpoint or bool(metric_readers)
        self._totals = Totals(settings.deployments, {b.name: b.region or "" for b in settings.backends})
        self._budget = TraceBudget(settings.traces_per_second if traces_per_second is None else traces_per_second)
        self._export = Exporters(settings, self._totals, instance_id=instance_id)
        self.exporter_ready = self._export.ready  # set once the Application Insights exporter is set up (or failed)
        for reader in metric_readers:
            self.attach(reader)
        if span_exporter is not None:
            self._export.install_tracing(lambda _: span_exporter)
        if azure:
            # The SDK and the exporter take hundreds of milliseconds to import: never on a request's path.
            threading.Thread(
                target=self._export.start_azure_monitor,
                kwargs={"traces": self._budget.per_second > 0},
                name="telemetry-setup",
                daemon=True,
            ).start()

    # --- per request ----------------------------------------------------------------------------

    def start(self, request: GatewayRequest) -> RequestTrace:
        """Begin a request's trace (a span tree only if the budget allows) and make it `current()`."""
        return start_trace(request, self._export.tracer, self._budget)

    def record(self, r: RequestRecord) -> None:
        """Count one finished request (the meter calls this exactly once per request), and end its trace."""
        overhead = self._totals.add_request(r)
        if self._breakers is not None and self._breakers.transitions:
            self._drain_transitions()
        r.trace.finish(r, overhead, log_prompts=self._log_prompts)

    def count_prompt_log(self, result: str, records: int) -> None:
        """Audit-log records written, dropped or failed (`shared.promptlog`)."""
        self._totals.count("gateway.promptlog.records", (result,), records)

    def count_content_safety(self, result: str, deployment: str) -> None:
        """One Content Safety check's result (`shared.contentsafety`)."""
        self._totals.count("gateway.content_safety.checks", (result, deployment))

    def record_probes(self, report: Mapping[str, Mapping[str, object]]) -> None:
        """Count one round of health probes (`shared.probe.probe_all`'s report)."""
        self._totals.add_probes(report)
        self._drain_transitions()

    def record_budget_alert(self, subscription_id: str, subscription_name: str, threshold: int) -> None:
        """Count one budget threshold crossed (claimed by this instance)."""
        self._totals.add_budget_alert(subscription_id, subscription_name, threshold)

    def _drain_transitions(self) -> None:
        board = self._breakers
        if board is None:
            return
        # Appends happen on the event loop; popping a counted prefix keeps any that land meanwhile.
        pending = [board.transitions.popleft() for _ in range(len(board.transitions))]
        if not pending:
            return
        self._totals.add_transitions(pending)

    # --- reading the totals ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        self._drain_transitions()
        return self._totals.snapshot()

    def prometheus(self) -> str:
        """Every metric's cumulative totals in the Prometheus text format (0.0.4)."""
        return render_prometheus(self.snapshot())

    def attach(self, reader: MetricReader, *, delta: bool = False) -> None:
        """Let an OpenTelemetry metric reader collect these metrics (cumulative, or delta for one reader)."""
        self._export.attach(reader, delta=delta)

    def force_flush(self) -> None:
        """Export what is pending now (blocking: call it from a thread)."""
        self._export.force_flush()

    def shutdown(self) -> None:
        """The last export before the process ends (blocking: call it from a thread)."""
        self._drain_transitions()
        self._export.shutdown()
