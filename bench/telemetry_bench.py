"""What telemetry costs: gateway CPU per request with telemetry off and on, side by side in one run.

Gateway processes (the local Functions host) run at the same time in front of
one simulator, each with a different telemetry setting:

    off          no exporter, no /metrics: the meter never calls telemetry
    prometheus   GATEWAY_METRICS_ENDPOINT=true: every request counted in process
    appinsights  APPLICATIONINSIGHTS_CONNECTION_STRING to a local ingestion
                 stand-in: metrics exported every minute (the SDK's default;
                 `--export-seconds` changes it), 1 trace per second (the default)
    every-trace  as appinsights, but every request traced (the worst case)

Load goes to each in turn, in several rounds, so drift on a busy machine
falls on every setting alike. The headline figure is each process's user +
system CPU (from /proc/<pid>/stat) over the whole run, background exports
included, divided by the requests it served; the median of the rounds shows
the noise. The target is under 10 % added by `appinsights` over `off`. A micro-benchmark of
`Telemetry.record` in this process follows, with no HTTP around it.

Run: `python -m bench.telemetry_bench [--requests 2500 --rounds 8]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

from bench.common import cpu_seconds, gateway, load, simulator
from devtools.ports import free_port

CHAT = json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5}).encode()
STREAM = json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5, "stream": True}).encode()
PATH = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
HEADERS = {"api-key": "bench-subscription-key", "content-type": "application/json"}
# No calls home from the benchmark: statsbeat, the exporter's own counts, its remote configuration.
QUIET_EXPORTER = {
    f"APPLICATIONINSIGHTS_{switch}": "true"
    for switch in ("STATSBEAT_DISABLED_ALL", "SDKSTATS_DISABLED", "CONTROLPLANE_DISABLED")
}


@dataclass
class Ingestion:
    """A stand-in for Application Insights' ingestion endpoint: accepts and counts what the exporter sends."""

    items: int = 0
    posts: int = 0
    largest: int = 0
    names: set[str] = field(default_factory=set)

    async def track(self, request: web.Request) -> web.Response:
        import gzip  # noqa: PLC0415

        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        envelopes = json.loads(raw)
        self.posts += 1
        self.items += len(envelopes)
        metrics = 0
        for envelope in envelopes:
            base = envelope.get("data", {}).get("baseData", {})
            for metric in base.get("metrics", []):
                self.names.add(metric.get("name"))
                metrics += 1
        self.largest = max(self.largest, metrics)
        body = {"itemsReceived": len(envelopes), "itemsAccepted": len(envelopes), "errors": []}
        return web.json_response(body)


@contextlib.contextmanager
def ingestion() -> Iterator[tuple[str, Ingestion]]:
    """The ingestion stand-in, served from a thread of its own: it answers even while the benchmark blocks."""
    sink = Ingestion()
    ready = threading.Event()
    port = free_port()
    loop = asyncio.new_event_loop()

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v2.1/track", sink.track)
        app.router.add_post("/v2/track", sink.track)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port}", sink
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def settings_for(name: str, ingest_url: str, export_seconds: float) -> dict[str, str]:
    """The app settings of one telemetry mode (`off#2`: a second process in that mode, to see the noise)."""
    name = name.split("#", 1)[0]
    connection = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        f"IngestionEndpoint={ingest_url};LiveEndpoint={ingest_url}"
    )
    exporter = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection,
        "OTEL_METRIC_EXPORT_INTERVAL": str(int(export_seconds * 1000)),
        **QUIET_EXPORTER,
    }
    # Each mode says where metrics go: the shared launcher counts them in process by default.
    return {
        "off": {"GATEWAY_METRICS_ENDPOINT": "false"},
        "prometheus": {"GATEWAY_METRICS_ENDPOINT": "true"},
        "appinsights": {**exporter, "GATEWAY_METRICS_ENDPOINT": "false"},
        "every-trace": {**exporter, "GATEWAY_METRICS_ENDPOINT": "false", "GATEWAY_TRACES_PER_SECOND": "1000000"},
        # the exporter loaded and its reader running, but no trace and no export during the run
        "appinsights-idle": {
            **exporter,
            "GATEWAY_METRICS_ENDPOINT": "false",
            "GATEWAY_TRACES_PER_SECOND": "0",
            "OTEL_METRIC_EXPORT_INTERVAL": "86400000",
        },
    }[name]


async def run(requests: int, rounds: int, concurrency: int, names: list[str], export_seconds: float) -> None:
    with ingestion() as (ingest_url, sink), simulator() as sim_url:
        backends = [{"name": "sim", "endpoint": sim_url, "deployments": ["chat", "embed"],
                     "auth": {"type": "api_key", "setting": "SIM_KEY"}}]  # fmt: skip
        with contextlib.ExitStack() as stack:
            gateways = {
                n: stack.enter_context(gateway(backends, settings_for(n, ingest_url, export_seconds))) for n in names
            }
            run_began = time.monotonic()
            for url, _ in gateways.values():  # warm: connections, lazy imports, the exporter's thread
                await load(url + PATH, HEADERS, CHAT, concurrency=concurrency, total=500)
            await asyncio.sleep(2)
            cpu: dict[str, list[float]] = {n: [] for n in names}
            errors = dict.fromkeys(names, 0)
            served = dict.fromkeys(names, 0)
            run_started = {n: cpu_seconds(pid) for n, (_, pid) in gateways.items()}
            for round_ in range(rounds):
                # Each round starts with the next setting: none always runs first or last.
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    url, pid = gateways[name]
                    before = cpu_seconds(pid)
                    result = await load(url + PATH, HEADERS, CHAT, concurrency=concurrency, total=requests)
                    await asyncio.sleep(0.3)  # let the last streams' metering and any export finish
                    cpu[name].append((cpu_seconds(pid) - before) * 1000 / result.requests)
                    errors[name] += result.errors
                    served[name] += result.requests
            whole = {n: (cpu_seconds(pid) - run_started[n]) * 1000 / served[n] for n, (_, pid) in gateways.items()}
            wall = time.monotonic() - run_began
            streamed: dict[str, float] = {}
            for name, (url, pid) in gateways.items():
                before = cpu_seconds(pid)
                result = await load(url + PATH, HEADERS, STREAM, concurrency=concurrency, total=requests // 2)
                await asyncio.sleep(0.3)
                streamed[name] = (cpu_seconds(pid) - before) * 1000 / result.requests
                errors[name] += result.errors

    def added(value: float, base: float | None) -> str:
        return f"{(value / base - 1) * 100:+.1f}%" if base else "-"

    base, base_stream = whole.get("off"), streamed.get("off")
    base_median, base_min = statistics.median(cpu.get("off", [0])), min(cpu.get("off", [0]))
    print(f"gateway CPU ms per request, {concurrency} connections, {rounds} rounds of {requests} non-streamed calls")
    print(f"(run of {wall:.0f} s; Application Insights metrics exported every {export_seconds:g} s)")
    header = f"{'telemetry':<13}{'whole run':>10}{'added':>9}{'median':>9}{'added':>9}{'best':>8}{'added':>9}"
    print(f"{header}{'stream':>9}{'added':>9}  rounds")
    for name in names:
        median, best = statistics.median(cpu[name]), min(cpu[name])
        each = ", ".join(f"{c:.3f}" for c in cpu[name])
        print(
            f"{name:<13}{whole[name]:>10.3f}{added(whole[name], base):>9}{median:>9.3f}{added(median, base_median):>9}"
            f"{best:>8.3f}{added(best, base_min):>9}{streamed[name]:>9.3f}{added(streamed[name], base_stream):>9}"
            f"  {each}" + (f"  ({errors[name]} errors)" if errors[name] else "")
        )
    print(f"Application Insights stand-in received {sink.items} items in {sink.posts} posts")
    print(f"largest metric export: {sink.largest} items")
    print(f"metric names exported: {', '.join(sorted(n for n in sink.names if n))}")


def micro(records: int) -> None:
    """`Telemetry.record` and `start` alone, in this process: the per-request cost without HTTP around it."""
    from shared.clock import SYSTEM_CLOCK  # noqa: PLC0415
    from shared.config import load_settings  # noqa: PLC0415
    from shared.ledger import Ledger  # noqa: PLC0415
    from shared.models import Caller, GatewayRequest, Limits, Usage  # noqa: PLC0415
    from shared.outcomes import Outcome, RequestRecord  # noqa: PLC0415
    from shared.stores.embedded import EmbeddedLedgerStore  # noqa: PLC0415
    from shared.telemetry import Telemetry  # noqa: PLC0415

    backends = [{"name": "east", "endpoint": "http://127.0.0.1:1", "deployments": ["chat"], "region": "eastus",
                 "auth": {"type": "api_key", "setting": "K"}}]  # fmt: skip
    settings = load_settings({"GATEWAY_BACKENDS": json.dumps(backends), "K": "k", "GATEWAY_METRICS_ENDPOINT": "true"})
    telemetry = Telemetry(settings, traces_per_second=0)
    caller = Caller("sub-0123456789abcdef", "team-a", Limits())
    request = GatewayRequest("POST", PATH, {"api-key": "k"}, {}, b"", "r")
    started = time.process_time()
    for _ in range(records):
        trace = telemetry.start(request)
        telemetry.record(
            RequestRecord(
                "r", "chat/completions", status=200, outcome=Outcome.SUCCESS, caller=caller, deployment="chat",
                backend="east", region="eastus", usage=Usage(12, 5), attempts=[("east", "200", 0.002)],
                seconds=0.0025, trace=trace,
            )
        )  # fmt: skip
    per = (time.process_time() - started) / records * 1e6
    print(f"in process: telemetry start + record of one request {per:.2f} us (metrics on, not traced)")
    ledger = Ledger(EmbeddedLedgerStore(), SYSTEM_CLOCK, writer="w", prices={}, deployments=frozenset({"chat"}),
                    flush_seconds=3600)  # fmt: skip
    record = RequestRecord("r", "chat/completions", status=200, caller=caller, deployment="chat", backend="east",
                           usage=Usage(12, 5))  # fmt: skip
    started = time.process_time()
    for _ in range(records):
        ledger.add(record)
    per = (time.process_time() - started) / records * 1e6
    print(f"in process: ledger add of one request {per:.2f} us (always on)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2500)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", default="off,prometheus,appinsights,every-trace")
    parser.add_argument("--export-seconds", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.rounds, args.concurrency, args.only.split(","), args.export_seconds))
    asyncio.run(_micro(200_000))


async def _micro(records: int) -> None:
    micro(records)  # the ledger starts its flush timer on the first add: it needs a running loop


if __name__ == "__main__":
    main()
