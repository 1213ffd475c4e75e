"""Metrics and traces, read back with the OpenTelemetry SDK's in-memory reader and span exporter.

The first part feeds `Telemetry` finished requests directly; the second runs
the gateway over real HTTP against the simulator and checks what streamed
and non-streamed calls, cache hits, throttles and failovers leave behind.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import json
import logging
import re
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from azure.identity import ManagedIdentityCredential
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.breaker import Status
from shared.config import Settings
from shared.models import Caller, GatewayRequest, Limits, Usage
from shared.outcomes import Outcome, RequestRecord
from shared.telemetry import INERT, Telemetry, current
from shared.telemetry.export import entra_credential
from shared.telemetry.names import METRICS
from shared.telemetry.prometheus import prometheus_name
from shared.telemetry.tracing import format_traceparent, parse_traceparent
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.observed import Observed, backend, observe
from tests.fixtures.servers import settings_for

ALICE = Caller("sub-alice", "alice", Limits())
SECRET_KEY = "gw-this-key-must-never-appear-in-telemetry"


def settings(**env: str) -> Settings:
    return settings_for(
        [
            {"name": "east", "endpoint": "http://127.0.0.1:1", "deployments": ["gpt-4o-mini"], "region": "eastus"},
            {"name": "west", "endpoint": "http://127.0.0.1:2", "deployments": ["gpt-4o-mini"], "region": "westus"},
        ],
        **env,
    )


# --- reading metrics back -------------------------------------------------------------------------


def points(data: MetricsData | None, name: str) -> list[Any]:
    assert data is not None
    found = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def one(data: MetricsData | None, name: str, **attributes: Any) -> Any:
    """The single data point of `name` whose attributes include `attributes`."""
    matching = [p for p in points(data, name) if all(p.attributes.get(k) == v for k, v in attributes.items())]
    assert len(matching) == 1, (name, attributes, [dict(p.attributes) for p in points(data, name)])
    return matching[0]


def value(data: MetricsData | None, name: str, **attributes: Any) -> float:
    """A counter's value, summed over every point whose attributes include `attributes` (0 if none)."""
    return sum(
        p.value
        for p in points(data, name)
        if isinstance(p, NumberDataPoint) and all(p.attributes.get(k) == v for k, v in attributes.items())
    )


def everything(data: MetricsData | None) -> Iterator[tuple[str, Mapping[str, Any]]]:
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    yield metric.name, point.attributes


def finished(**fields: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "status": 200,
        "outcome": Outcome.SUCCESS,
        "caller": ALICE,
        "deployment": "gpt-4o-mini",
        "backend": "east",
        "region": "eastus",
        "usage": Usage(12, 34),
        "attempts": [("east", "200", 0.05)],
        "seconds": 0.06,
        "cache": None,
    }
    return RequestRecord("req-1", "chat/completions", **{**base, **fields})


# --- metrics from finished requests ----------------------------------------------------------------


def test_a_completion_records_genai_token_usage_and_duration_with_every_dimension() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings(), metric_readers=[reader])
    telemetry.record(finished())
    data = reader.get_metrics_data()
    dims = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gateway.subscription.id": "sub-alice",
        "gateway.subscription.name": "alice",
        "gateway.deployment": "gpt-4o-mini",
        "gateway.backend": "east",
        "cloud.region": "eastus",
        "gateway.cache.status": "off",
        "gateway.streamed": "false",
    }
    tokens_in = one(data, "gen_ai.client.token.usage", **{"gen_ai.token.type": "input"})
    tokens_out = one(data, "gen_ai.client.token.usage", **{"gen_ai.token.type": "output"})
    assert isinstance(tokens_in, HistogramDataPoint)
    assert dict(tokens_in.attributes) == {**dims, "gen_ai.token.type": "input"}
    assert (tokens_in.sum, tokens_in.count, tokens_out.sum) == (12, 1, 34)
    # 12 tokens fall in the semantic conventions' (4, 16] bucket
    assert tokens_in.bucket_counts[2] == 1
    assert tokens_in.explicit_bounds[:3] == [1, 4, 16]
    duration = one(data, "gen_ai.client.operation.duration")
    assert dict(duration.attributes) == dims
    assert duration.sum == pytest.approx(0.06)
    assert value(data, "gateway.requests", **{"gateway.outcome": "success", "http.response.status_code": 200}) == 1
    overhead = one(data, "gateway.overhead")
    assert overhead.sum == pytest.approx(0.01)  # 60 ms in all, 50 of them waiting on the backend


def test_a_stream_counts_its_tokens_and_its_overhead_until_the_first_event() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings(), metric_readers=[reader])
    # 3 s in all; the backend took 200 ms to its first event, which was ready 205 ms after arrival.
    telemetry.record(finished(streamed=True, seconds=3.0, ready_seconds=0.205, attempts=[("east", "200", 0.2)]))
    data = reader.get_metrics_data()
    tokens = one(data, "gen_ai.client.token.usage", **{"gen_ai.token.type": "output", "gateway.streamed": "true"})
    assert tokens.sum == 34
    assert one(data, "gen_ai.client.operation.duration").sum == pytest.approx(3.0)
    assert one(data, "gateway.overhead", **{"gateway.streamed": "true"}).sum == pytest.approx(0.005)


def test_failovers_count_every_attempt_but_the_last_by_the_backend_that_failed() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings(), metric_readers=[reader])
    attempts = [("east", "503", 0.01), ("west", "timeout", 1.0), ("east", "200", 0.1)]
    telemetry.record(finished(attempts=attempts, seconds=1.2))
    data = reader.get_metrics_data()
    assert value(data, "gateway.backend.attempts") == 3
    assert value(data, "gateway.backend.attempts", **{"gateway.backend": "east"}) == 2
    assert value(data, "gateway.backend.failovers") == 2
    failed_over = one(data, "gateway.backend.failovers", **{"gateway.backend": "west"})
    assert dict(failed_over.attributes) == {
        "gateway.backend": "west",
        "gateway.deployment": "gpt-4o-mini",
        "cloud.region": "westus",
        "gateway.attempt.outcome": "timeout",
    }
    assert one(data, "gateway.overhead").sum == pytest.approx(0.09)  # time waiting on any backend is not overhead


def test_refusals_and_cache_hits_are_requests_by_outcome_without_token_usage() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings(), metric_readers=[reader])
    refused = {"usage": None, "attempts": [], "backend": None, "region": None}
    telemetry.record(finished(status=429, outcome=Outcome.THROTTLED, error="rate_limit_exceeded", **refused))
    telemetry.record(finished(status=403, outcome=Outcome.QUOTA_EXCEEDED, error="quota_exceeded", **refused))
    telemetry.record(finished(outcome=Outcome.CACHE_HIT, cache="HIT", tokens_saved=46, **refused))
    telemetry.record(finished(cache="MISS"))
    data = reader.get_metrics_data()
    assert value(data, "gateway.requests", **{"gateway.outcome": "throttled", "http.response.status_code": 429}) == 1
    assert value(data, "gateway.requests", **{"gateway.outcome": "quota_exceeded"}) == 1
    assert value(data, "gateway.requests", **{"gateway.outcome": "cache_hit", "gateway.cache.status": "hit"}) == 1
    assert value(data, "gateway.cache.lookups", **{"gateway.cache.status": "hit"}) == 1
    assert value(data, "gateway.cache.lookups", **{"gateway.cache.status": "miss"}) == 1
    assert value(data, "gateway.cache.tokens_saved", **{"gateway.subscription.id": "sub-alice"}) == 46
    # only the miss reached a backend
    assert [p.sum for p in points(data, "gen_ai.client.token.usage")] == [12, 34]
    throttled = one(data, "gen_ai.client.operation.duration", **{"error.type": "rate_limit_exceeded"})
    assert "gateway.backend" not in throttled.attributes  # no backend answered: the dimension is left out


def test_unknown_deployment_names_never_become_dimensions() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings(), metric_readers=[reader])
    telemetry.record(finished(deployment="attacker-chosen-name", status=404, outcome=Outcome.CLIENT_ERROR))
    assert all("attacker" not in str(attrs) for _, attrs in everything(reader.get_metrics_data()))


def test_breaker_transitions_and_probe_latency_are_counted() -> None:
    class Board:  # the shape of BreakerBoard that telemetry reads
        transitions: deque[tuple[str, Status, Status]]

    board = Board()
    board.transitions = deque(
        [
            ("east|gpt-4o-mini", Status.CLOSED, Status.OPEN),
            ("east|gpt-4o-mini", Status.OPEN, Status.HALF_OPEN),
        ]
    )
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings(), metric_readers=[reader], breakers=board)  # type: ignore[arg-type]
    telemetry.record_probes(
        {
            "east|gpt-4o-mini": {"ok": False, "status": 0, "latency_ms": 10000.0, "error": "timeout"},
            "west|gpt-4o-mini": {"ok": True, "status": 200, "latency_ms": 35.5},
        }
    )
    data = reader.get_metrics_data()
    assert not board.transitions
    trip = one(data, "gateway.breaker.transitions", **{"gateway.breaker.to": "open"})
    assert dict(trip.attributes) == {
        "gateway.backend": "east",
        "gateway.deployment": "gpt-4o-mini",
        "gateway.breaker.from": "closed",
        "gateway.breaker.to": "open",
    }
    healthy = one(data, "gateway.probe.duration", **{"gateway.probe.ok": "true"})
    assert healthy.sum == pytest.approx(0.0355)
    assert healthy.attributes["cloud.region"] == "westus"
    assert healthy.attributes["http.response.status_code"] == 200
    assert one(data, "gateway.probe.duration", **{"gateway.probe.ok": "false"}).sum == pytest.approx(10.0)


def test_a_delta_reader_gets_only_what_happened_since_its_last_collection() -> None:
    cumulative, delta = InMemoryMetricReader(), InMemoryMetricReader()
    telemetry = Telemetry(settings(), metric_readers=[cumulative])
    telemetry.attach(delta, delta=True)
    telemetry.record(finished(seconds=0.5))
    first = delta.get_metrics_data()
    telemetry.record(finished(seconds=0.1))
    second = delta.get_metrics_data()
    assert value(first, "gateway.requests") == 1
    assert value(second, "gateway.requests") == 1
    d = one(second, "gen_ai.client.operation.duration")
    assert (d.count, d.sum, d.min, d.max) == (1, pytest.approx(0.1), 0.1, 0.1)
    c = one(cumulative.get_metrics_data(), "gen_ai.client.operation.duration")
    assert (c.count, c.sum, c.min, c.max) == (2, pytest.approx(0.6), 0.1, 0.5)
    assert points(delta.get_metrics_data(), "gateway.requests") == []  # nothing new, nothing sent
    metric = next(m for m in first.resource_metrics[0].scope_metrics[0].metrics if m.name == "gateway.requests")
    assert metric.data.aggregation_temporality is AggregationTemporality.DELTA
    with pytest.raises(ValueError, match="one delta reader"):
        telemetry.attach(InMemoryMetricReader(), delta=True)


def test_metric_names_units_and_resource_follow_the_conventions() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings(), metric_readers=[reader], instance_id="host-1-abc")
    telemetry.record(finished())
    data = reader.get_metrics_data()
    assert data is not None
    (resource,) = data.resource_metrics
    assert resource.resource.attributes["service.name"] == "aoai-gateway"
    assert resource.resource.attributes["service.instance.id"] == "host-1-abc"
    units = {m.name: m.unit for m in resource.scope_metrics[0].metrics}
    assert units["gen_ai.client.token.usage"] == "{token}"
    assert units["gen_ai.client.operation.duration"] == "s"


def test_importing_telemetry_loads_neither_the_sdk_nor_the_exporter() -> None:
    code = (
        "import sys, shared.telemetry; "
        "loaded = {m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'azure.monitor'))}; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_telemetry_imports_no_stage_not_even_for_types() -> None:
    # The stages (proxy, meter, pipeline) import telemetry; an import back, even under TYPE_CHECKING, is a cycle.
    root = Path(__file__).resolve().parent.parent / "shared"
    stages = {"shared.meter", "shared.pipeline", "shared.proxy", "shared.ratelimit", "shared.api", "shared.ledger"}
    found = {}
    for path in [*sorted((root / "telemetry").glob("*.py")), root / "outcomes.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in stages:
                found[path.name] = node.module
    assert found == {}


def test_with_nothing_to_export_to_telemetry_is_off_and_requests_pass_the_callers_trace_on() -> None:
    telemetry = Telemetry(settings())
    assert not telemetry.enabled
    plain = GatewayRequest("POST", "/x", {}, {}, b"", "r1")
    assert telemetry.start(plain) is INERT
    traced = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "k=v"}
    trace = telemetry.start(GatewayRequest("POST", "/x", traced, {}, b"", "r2"))
    assert current() is trace
    assert not trace.recording
    attempt = trace.attempt("east", "gpt-4o-mini", "chat/completions", "http://east/x")
    assert attempt.headers == traced  # not traced here: the backend joins the caller's trace
    assert Telemetry(settings(GATEWAY_METRICS_ENDPOINT="true")).enabled


@pytest.mark.parametrize(
    "header",
    [
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "garbage",
        "",
    ],
)
def test_invalid_traceparents_are_ignored(header: str) -> None:
    assert parse_traceparent(header) is None


def test_traceparent_round_trips() -> None:
    parsed = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert parsed == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1)
    assert format_traceparent(parsed[0], parsed[1], sampled=True).endswith("-b7ad6b7169203331-01")


# --- traces ---------------------------------------------------------------------------------------


def spans_of(exporter: InMemorySpanExporter, telemetry: Telemetry) -> dict[str, ReadableSpan]:
    telemetry.force_flush()
    return {s.name: s for s in exporter.get_finished_spans()}


def test_a_traced_request_is_one_trace_with_a_span_per_stage_and_per_attempt() -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(settings(), metric_readers=[InMemoryMetricReader()], span_exporter=exporter)
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "api-key": SECRET_KEY}
    trace = telemetry.start(GatewayRequest("POST", "/openai/x", incoming, {}, b"", "req-9"))
    assert trace.recording
    with trace.stage("auth"):
        pass
    with pytest.raises(RuntimeError), trace.stage("limits"):
        raise RuntimeError("boom")
    failed = trace.attempt("east", "gpt-4o-mini", "chat/completions", "http://east/openai/deployments/gpt-4o-mini")
    failed.end("503")
    ok = trace.attempt("west", "gpt-4o-mini", "chat/completions", "http://west/openai/deployments/gpt-4o-mini")
    ok.end("200")
    telemetry.record(finished(attempts=[("east", "503", 0.01), ("west", "200", 0.04)], trace=trace))
    spans = spans_of(exporter, telemetry)
    root = spans["POST chat/completions"]
    assert root.kind.name == "SERVER"
    assert root.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C  # joined the caller's trace
    assert root.parent is not None
    assert root.parent.span_id == 0xB7AD6B7169203331
    assert root.attributes["gateway.overhead_ms"] == pytest.approx(10.0)
    assert root.attributes["gen_ai.usage.input_tokens"] == 12
    assert root.attributes["gateway.request_id"] == "req-1"
    children = [s for s in exporter.get_finished_spans() if s is not root]
    assert sorted(s.name for s in children) == ["auth", "chat gpt-4o-mini", "chat gpt-4o-mini", "limits"]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children)
    assert {s.context.trace_id for s in children} == {root.context.trace_id}
    assert spans["limits"].status.status_code.name == "ERROR"
    attempts = [s for s in children if s.kind.name == "CLIENT"]
    assert [s.attributes["gateway.attempt.outcome"] for s in attempts] == ["503", "200"]
    # the backend got the attempt's own context, in the caller's trace
    assert ok.headers["traceparent"] == format_traceparent(
        root.context.trace_id, attempts[1].context.span_id, sampled=True
    )
    for span in exporter.get_finished_spans():
        assert SECRET_KEY not in json.dumps(dict(span.attributes or {}))


def test_the_trace_budget_limits_traced_requests_per_second() -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(settings(), span_exporter=exporter, traces_per_second=2)
    traces = [telemetry.start(GatewayRequest("POST", "/x", {}, {}, b"", f"r{i}")) for i in range(50)]
    assert sum(t.recording for t in traces) == 2
    assert (
        not Telemetry(settings(), span_exporter=exporter, traces_per_second=0)
        .start(GatewayRequest("POST", "/x", {}, {}, b"", "r"))
        .recording
    )


# --- Prometheus -----------------------------------------------------------------------------------


def test_prometheus_text_has_every_metric_with_labels_buckets_and_totals() -> None:
    telemetry = Telemetry(settings(GATEWAY_METRICS_ENDPOINT="true"))
    telemetry.record(finished())
    telemetry.record(
        finished(
            caller=Caller("sub-q", 'quote"and\\slash', Limits()), status=429, outcome=Outcome.THROTTLED, usage=None
        )
    )
    text = telemetry.prometheus()
    for spec in METRICS:
        assert f"# TYPE {prometheus_name(spec)} " in text
    assert 'gateway_requests_total{gateway_outcome="success",http_response_status_code="200",' in text
    assert 'gateway_subscription_name="quote\\"and\\\\slash"' in text
    buckets = re.findall(
        r'^gen_ai_client_token_usage_bucket\{.*gen_ai_token_type="input".*le="([^"]+)"\} (\d+)$', text, re.M
    )
    assert buckets[-1] == ("+Inf", "1")
    assert buckets[0] == ("1", "0")
    counts = re.findall(r"^gen_ai_client_operation_duration_seconds_count\{.*\} (\d+)$", text, re.M)
    assert sorted(counts) == ["1", "1"]  # two subscriptions, two series
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(r"[a-z_]+(\{.*\})? [0-9.e+-]+|[a-z_]+(\{.*\})? \+Inf", line), line


# --- Application Insights ------------------------------------------------------------------------


class Ingestion:
    """A stand-in for Application Insights' ingestion endpoint, keeping every envelope it is sent."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []

    async def track(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        sent = json.loads(raw)
        self.envelopes.extend(sent)
        return web.json_response({"itemsReceived": len(sent), "itemsAccepted": len(sent), "errors": []})

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for envelope in self.envelopes:
            base = envelope["data"]["baseData"]
            for metric in base.get("metrics", []):
                found.setdefault(metric["name"], []).append({**metric, "properties": base.get("properties", {})})
        return found


async def test_application_insights_gets_the_metrics_and_the_request_span_under_the_workbooks_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the exporter keeps what it could not send
    # No calls home from a test: statsbeat, the exporter's own counts, its remote configuration.
    for switch in ("STATSBEAT_DISABLED_ALL", "SDKSTATS_DISABLED", "CONTROLPLANE_DISABLED"):
        monkeypatch.setenv(f"APPLICATIONINSIGHTS_{switch}", "true")
    sink = Ingestion()
    app = web.Application()
    app.router.add_post("/v2.1/track", sink.track)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    connection = f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:{port}"
    telemetry = Telemetry(
        settings(APPLICATIONINSIGHTS_CONNECTION_STRING=connection), instance_id="host-1", traces_per_second=10
    )
    try:
        assert await asyncio.to_thread(telemetry.exporter_ready.wait, 30)
        trace = telemetry.start(GatewayRequest("POST", "/openai/x", {"api-key": SECRET_KEY}, {}, b"", "req-1"))
        telemetry.record(finished(trace=trace))
        await asyncio.to_thread(telemetry.force_flush)
        for _ in range(200):
            if any(e["data"]["baseType"] == "RequestData" for e in sink.envelopes):
                break
            await asyncio.sleep(0.02)
    finally:
        await asyncio.to_thread(telemetry.shutdown)
        await runner.cleanup()
    metrics = sink.metrics()
    assert set(metrics) >= {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "gateway.requests"}
    tokens = {m["properties"]["gen_ai.token.type"]: m for m in metrics["gen_ai.client.token.usage"]}
    assert (tokens["input"]["value"], tokens["output"]["value"]) == (12, 34)
    assert tokens["input"]["properties"]["gateway.subscription.name"] == "alice"
    assert metrics["gateway.requests"][0]["properties"]["gateway.outcome"] == "success"
    (request,) = [e for e in sink.envelopes if e["data"]["baseType"] == "RequestData"]
    assert float(request["data"]["baseData"]["properties"]["gateway.overhead_ms"]) == pytest.approx(10.0)
    assert request["tags"]["ai.cloud.role"] == "aoai-gateway"
    assert request["tags"]["ai.cloud.roleInstance"] == "host-1"
    assert SECRET_KEY not in json.dumps(sink.envelopes)


def test_entra_authentication_uses_the_named_managed_identity() -> None:
    assert entra_credential(settings()) is None
    assert entra_credential(settings(APPLICATIONINSIGHTS_AUTHENTICATION_STRING="Authorization=Key")) is None
    aad = entra_credential(settings(APPLICATIONINSIGHTS_AUTHENTICATION_STRING="Authorization=AAD;ClientId=1234"))
    assert isinstance(aad, ManagedIdentityCredential)


# --- end to end: the gateway over HTTP, simulator backends ----------------------------------------


ALICE_KEY, BOB_KEY = "alice-key-0123456789", "bob-key-0123456789"


@pytest.fixture(scope="module")
def sims() -> Iterator[tuple[SimulatorThread, SimulatorThread]]:
    east = SimulatorThread(
        SimulatorConfig(name="east", region="eastus", deployments=("gpt-4o-mini",), api_key="sim-key")
    )
    west = SimulatorThread(
        SimulatorConfig(name="west", region="westus", deployments=("gpt-4o-mini",), api_key="sim-key")
    )
    with east, west:
        yield east, west


@pytest.fixture
def east_west(sims: tuple[SimulatorThread, SimulatorThread]) -> tuple[SimulatorThread, SimulatorThread]:
    for sim in sims:
        sim.reset()
        sim.clear_requests()
    return sims


def ask(observed: Observed, key: str = ALICE_KEY, **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", 5)
    return observed.client(key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}], **kwargs
    )


def test_streamed_and_unary_calls_count_exactly_the_tokens_the_backend_reported(
    gateway_server: Any, east_west: tuple[SimulatorThread, SimulatorThread]
) -> None:
    east, _ = east_west
    observed = observe(gateway_server, [backend("east", east)])
    unary = ask(observed)
    chunks = list(ask(observed, stream=True, stream_options={"include_usage": True}))
    streamed = next(c.usage for c in chunks if c.usage is not None)
    data = observed.settled(2)
    sub = observed.ids[ALICE_KEY]
    for flag, usage in (("false", unary.usage), ("true", streamed)):
        common = {"gateway.streamed": flag, "gateway.subscription.id": sub}
        assert (
            one(data, "gen_ai.client.token.usage", **common, **{"gen_ai.token.type": "input"}).sum
            == usage.prompt_tokens
        )
        output = one(data, "gen_ai.client.token.usage", **common, **{"gen_ai.token.type": "output"})
        assert output.sum == usage.completion_tokens
        assert output.attributes["gateway.subscription.name"] == "alice"
        assert output.attributes["gateway.backend"] == "east"
        assert output.attributes["cloud.region"] == "eastus"
        assert output.attributes["gateway.cache.status"] == "off"
        assert value(data, "gateway.requests", **common, **{"gateway.outcome": "success"}) == 1
        assert one(data, "gen_ai.client.operation.duration", **common).count == 1
    assert value(data, "gateway.backend.attempts", **{"gateway.attempt.outcome": "200"}) == 2
    for name, attributes in everything(data):
        assert ALICE_KEY not in json.dumps(dict(attributes)), name


def test_a_failover_is_counted_traced_and_the_backend_gets_the_attempts_trace_context(
    gateway_server: Any, east_west: tuple[SimulatorThread, SimulatorThread]
) -> None:
    east, west = east_west
    east.set_faults(error_rate=1.0, error_status=503, count=1)
    observed = observe(gateway_server, [backend("east", east), backend("west", west, priority=2)])
    ask(observed)
    data = observed.metrics()
    failover = one(data, "gateway.backend.failovers")
    assert failover.value == 1
    assert dict(failover.attributes) == {
        "gateway.backend": "east",
        "gateway.deployment": "gpt-4o-mini",
        "cloud.region": "eastus",
        "gateway.attempt.outcome": "503",
    }
    assert value(data, "gateway.backend.attempts", **{"gateway.backend": "west", "gateway.attempt.outcome": "200"}) == 1
    assert value(data, "gateway.requests", **{"gateway.outcome": "success", "gateway.backend": "west"}) == 1
    spans = observed.spans()
    (root,) = [s for s in spans if s.kind.name == "SERVER"]
    attempts = sorted((s for s in spans if s.kind.name == "CLIENT"), key=lambda s: s.start_time or 0)
    assert [s.attributes["gateway.backend"] for s in attempts] == ["east", "west"]
    assert {s.name for s in spans} >= {"auth", "limits", "cache", "chat gpt-4o-mini", "POST chat/completions"}
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    for sim, span in ((east, attempts[0]), (west, attempts[1])):
        (seen,) = sim.requests()
        expected = format_traceparent(span.context.trace_id, span.context.span_id, sampled=True)
        assert seen["headers"]["traceparent"] == expected


def test_every_backend_failing_still_counts_the_attempts_and_a_backend_error(
    gateway_server: Any, east_west: tuple[SimulatorThread, SimulatorThread]
) -> None:
    east, west = east_west
    for sim in east_west:
        sim.set_faults(error_rate=1.0, error_status=500)
    observed = observe(gateway_server, [backend("east", east), backend("west", west, priority=2)])
    with pytest.raises(openai.APIStatusError):
        ask(observed)
    data = observed.metrics()
    assert (
        value(data, "gateway.requests", **{"gateway.outcome": "backend_error", "http.response.status_code": 503}) == 1
    )
    assert value(data, "gateway.backend.attempts", **{"gateway.attempt.outcome": "500"}) == 2
    assert value(data, "gateway.backend.failovers") == 1


def test_a_streamed_call_has_a_stream_span_and_its_overhead_excludes_the_streaming(
    gateway_server: Any, east_west: tuple[SimulatorThread, SimulatorThread]
) -> None:
    east, _ = east_west
    east.set_latency(ttft_ms=30, tokens_per_second=100)  # 5 tokens: ~80 ms in all, 30 to the first
    observed = observe(gateway_server, [backend("east", east)])
    list(ask(observed, stream=True))
    data = observed.settled(1)
    spans = {s.name: s for s in observed.spans()}
    stream = spans["stream"]
    assert stream.end_time is not None
    assert stream.start_time is not None
    assert (stream.end_time - stream.start_time) / 1e9 > 0.03
    overhead = one(data, "gateway.overhead", **{"gateway.streamed": "true"})
    assert overhead.sum < 0.03  # what the gateway added, not the tokens' pace


def test_throttles_and_quota_refusals_are_requests_by_outcome(
    gateway_server: Any, east_west: tuple[SimulatorThread, SimulatorThread]
) -> None:
    east, _ = east_west
    subscriptions = {
        ALICE_KEY: {"name": "alice", "requests_per_minute": 1},
        BOB_KEY: {"name": "bob", "token_quota": 1, "token_quota_period": "daily"},
    }
    observed = observe(gateway_server, [backend("east", east)], subscriptions=subscriptions)
    ask(observed)
    with pytest.raises(openai.RateLimitError):
        ask(observed)
    with pytest.raises(openai.PermissionDeniedError):
        ask(observed, BOB_KEY)
    data = observed.metrics()
    throttled = one(data, "gateway.requests", **{"gateway.outcome": "throttled"})
    assert throttled.attributes["http.response.status_code"] == 429
    assert throttled.attributes["gateway.subscription.name"] == "alice"
    refused = one(data, "gateway.requests", **{"gateway.outcome": "quota_exceeded"})
    assert refused.attributes["gateway.subscription.name"] == "bob"
    assert refused.attributes["http.response.status_code"] == 403
    assert len(points(data, "gen_ai.client.token.usage")) == 2  # only the call that was let through used tokens


def test_a_cache_hit_counts_as_a_hit_with_the_tokens_it_saved(
    gateway_server: Any, east_west: tuple[SimulatorThread, SimulatorThread]
) -> None:
    east, _ = east_west
    cache = json.dumps({"deployments": ["gpt-4o-mini"], "semantic": False})
    observed = observe(gateway_server, [backend("east", east)], GATEWAY_CACHE=cache)
    # No max_tokens: the answer ends on its own, and only complete answers are stored.
    first = ask(observed, temperature=0, max_tokens=None)
    cache = observed.gateway.cache
    assert cache is not None
    observed.server.run(cache.flush())  # the answer is stored in the background
    ask(observed, temperature=0, max_tokens=None)
    data = observed.metrics()
    assert len(east.requests()) == 1
    assert value(data, "gateway.requests", **{"gateway.outcome": "cache_hit", "gateway.cache.status": "hit"}) == 1
    assert value(data, "gateway.cache.lookups", **{"gateway.cache.status": "hit"}) == 1
    assert value(data, "gateway.cache.lookups", **{"gateway.cache.status": "miss"}) == 1
    assert value(data, "gateway.cache.tokens_saved") == first.usage.total_tokens
    output = one(data, "gen_ai.client.token.usage", **{"gen_ai.token.type": "output"})
    assert output.attributes["gateway.cache.status"] == "miss"
    assert output.sum == first.usage.completion_tokens  # the hit used no tokens


def test_a_probe_round_and_a_breaker_trip_reach_the_metrics(
    gateway_server: Any, east_west: tuple[SimulatorThread, SimulatorThread]
) -> None:
    east, west = east_west
    east.set_faults(down=True)
    observed = observe(gateway_server, [backend("east", east), backend("west", west)])

    async def probe() -> None:
        from shared.probe import probe_all

        observed.gateway.telemetry.record_probes(await probe_all(observed.gateway))

    observed.server.run(probe())
    data = observed.metrics()
    down = one(data, "gateway.probe.duration", **{"gateway.probe.ok": "false"})
    assert down.attributes["gateway.backend"] == "east"
    assert one(data, "gateway.probe.duration", **{"gateway.probe.ok": "true"}).attributes["cloud.region"] == "westus"
    trip = one(data, "gateway.breaker.transitions", **{"gateway.breaker.to": "open"})
    assert trip.attributes["gateway.backend"] == "east"


@pytest.mark.parametrize("log_prompts", ["false", "true"])
def test_the_request_log_line_has_no_key_and_the_prompt_only_when_asked(
    gateway_server: Any,
    east_west: tuple[SimulatorThread, SimulatorThread],
    caplog: pytest.LogCaptureFixture,
    log_prompts: str,
) -> None:
    east, _ = east_west
    observed = observe(gateway_server, [backend("east", east)], GATEWAY_LOG_PROMPTS=log_prompts)
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        observed.client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "The secret plan is blue"}], max_tokens=3
        )
        observed.settled(1)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gateway.request"]
    assert "outcome=success" in line
    assert "prompt_tokens=" in line
    assert f"subscription={observed.ids[ALICE_KEY]}" in line
    assert "trace=" in line  # traced (every request is, here): the id to find it in Application Insights
    assert ALICE_KEY not in line
    assert ("The secret plan is blue" in line) is (log_prompts == "true")
