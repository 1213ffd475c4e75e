"""Shared token limits across three gateway processes on one Azurite, measured from outside.

Three `local.host` gateways share one Azurite table service and one
simulator. A subscription is created through the admin API, then loaded
round-robin across the three, over its limit, by a bounded aiohttp client.
Printed: tokens admitted in each full window against the limit (the usage the
backend reported, attributed to the window the gateway charged, which its
`x-ratelimit-reset-tokens` header gives), storage transactions per request
(each instance counts the HTTP requests its Table clients send:
GET /gateway/admin/stats), and the gateways' CPU milliseconds per request
(/proc/<pid>/stat) with Table-backed limits on, next to the same load on a
subscription without limits.

Run: `python -m bench.limits_bench [--minutes 3] [--tpm 60000]` (real minutes:
the default window is the minute; `--window-seconds 10` enforces TPM/6 per
10 s, as `make bench` does for a short run). tests/test_multi_instance.py
runs the same harness with a 10-second window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from bench.common import cpu_seconds, gateway, simulator
from devtools.azurite import Azurite

ADMIN_KEY = "bench-admin-" + secrets.token_hex(8)
SIM_KEY = "bench-key"  # what bench.common's simulator and gateways use
PATH = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
PROMPT = "Summarise the benefits of sharing rate limits between gateway instances in one sentence."


@dataclass
class Cluster:
    urls: list[str]
    pids: list[int]
    azurite: Azurite
    window_seconds: int

    async def admin(self, session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
        async with session.request(
            method, f"{self.urls[0]}/gateway/admin/{path}", json=body, headers={"x-admin-key": ADMIN_KEY}
        ) as response:
            payload = await response.json()
            if response.status >= 400:
                raise RuntimeError(f"admin {method} {path}: {response.status} {payload}")
            return payload

    async def stats(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        out = []
        for url in self.urls:
            async with session.get(f"{url}/gateway/admin/stats", headers={"x-admin-key": ADMIN_KEY}) as response:
                out.append(await response.json())
        return out

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)


@contextmanager
def cluster(
    instances: int = 3, *, window_seconds: int = 60, sim_tpm: int = 10**9, env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """Azurite, one simulator and `instances` gateway processes sharing both; all stopped on exit."""
    with ExitStack() as stack:
        location = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="azurite-")))
        azurite = Azurite(location).start()
        stack.callback(azurite.stop)
        sim_url = stack.enter_context(simulator("sim", extra=["--tpm", str(sim_tpm)]))
        backends: list[dict[str, object]] = [
            {
                "name": "sim",
                "endpoint": sim_url,
                "deployments": ["chat"],
                "auth": {"type": "api_key", "setting": "SIM_KEY"},
            }
        ]
        settings = {
            "GATEWAY_STORAGE": azurite.connection_string,
            "GATEWAY_TABLE_PREFIX": "bench" + secrets.token_hex(3),
            "GATEWAY_ADMIN_KEY": ADMIN_KEY,
            "GATEWAY_RATE_WINDOW_SECONDS": str(window_seconds),
            "GATEWAY_DEMO_KEY": "",  # subscriptions come from the admin API here
            **(env or {}),
        }
        urls, pids = [], []
        for _ in range(instances):
            url, pid = stack.enter_context(gateway(backends, settings))
            urls.append(url)
            pids.append(pid)
        yield Cluster(urls, pids, azurite, window_seconds)


@dataclass
class Sample:
    sent: float
    status: int
    tokens: int  # usage the backend reported (200 only)
    window: int | None  # index of the window the gateway charged, from x-ratelimit-reset-tokens
    instance: int


@dataclass
class LoadRun:
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def count(self, status: int | None = None) -> int:
        return sum(1 for s in self.samples if status is None or s.status == status)


def _charged_window(sent: float, headers: CIMultiDictProxy[str], window_seconds: int) -> int | None:
    reset = headers.get("x-ratelimit-reset-tokens", "")
    if not reset.endswith("s"):
        return None
    # The gateway said when the window it charged ends; the request left here a few ms before it was charged.
    return round((sent + float(reset[:-1])) / window_seconds) - 1


async def drive(
    cluster_: Cluster, key: str, *, seconds: float, concurrency: int, max_tokens: int, rate: float | None = None
) -> LoadRun:
    """Round-robin POSTs over the instances for `seconds` (optionally paced to `rate` per second)."""
    body = json.dumps({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}).encode()
    headers = {"api-key": key, "content-type": "application/json"}
    run = LoadRun(started=time.time())
    deadline = time.monotonic() + seconds
    counter = 0
    pace = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> None:
            instance = n % len(cluster_.urls)
            sent = time.time()
            try:
                async with session.post(cluster_.urls[instance] + PATH, data=body, headers=headers) as response:
                    payload = await response.read()
                    tokens = 0
                    if response.status == 200:
                        tokens = int(json.loads(payload)["usage"]["total_tokens"])
                    window = _charged_window(sent, response.headers, cluster_.window_seconds)
                    run.samples.append(Sample(sent, response.status, tokens, window, instance))
            except aiohttp.ClientError:
                run.samples.append(Sample(sent, 0, 0, None, instance))
            finally:
                pace.release()

        tasks: set[asyncio.Task[None]] = set()
        while time.monotonic() < deadline:
            await pace.acquire()
            task = asyncio.get_running_loop().create_task(one(counter))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            counter += 1
            if rate:
                await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    run.ended = time.time()
    return run


@dataclass(frozen=True, slots=True)
class WindowFigure:
    start: float
    admitted_tokens: int
    ok: int
    limited: int
    cap: int

    @property
    def ratio(self) -> float:
        return self.admitted_tokens / self.cap


def per_window(run: LoadRun, window_seconds: int, tpm: int) -> list[WindowFigure]:
    """Admitted tokens in every window the load covered from start to end (partial first and last dropped)."""
    cap = math.ceil(tpm * window_seconds / 60)
    first = math.floor(run.started / window_seconds) + 1
    last = math.floor(run.ended / window_seconds) - 1
    figures = []
    for index in range(first, last + 1):
        in_window = [s for s in run.samples if s.window == index]
        figures.append(
            WindowFigure(
                start=index * window_seconds,
                admitted_tokens=sum(s.tokens for s in in_window if s.status == 200),
                ok=sum(1 for s in in_window if s.status == 200),
                limited=sum(1 for s in in_window if s.status == 429),
                cap=cap,
            )
        )
    return figures


def transactions(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> int:
    return sum(
        int(later["storage"]["transactions"]) - int(earlier["storage"]["transactions"])
        for earlier, later in zip(before, after, strict=True)
    )


async def limits_run(
    c: Cluster, *, tpm: int, seconds: float, overload: float, max_tokens: int, concurrency: int = 64
) -> tuple[LoadRun, list[WindowFigure], float, float]:
    """Offer `overload` times the limit to one subscription for `seconds`.

    Returns the run, its full windows, storage transactions per request and gateway CPU ms per request.
    """
    async with aiohttp.ClientSession() as session:
        created = await c.admin(session, "POST", "subscriptions", {"name": "overload", "tokens_per_minute": tpm})
        key = created["primary_key"]
        warm = await drive(c, key, seconds=1.0, concurrency=3, max_tokens=max_tokens)  # lookups, tables, leases
        per_request = max(s.tokens for s in warm.samples if s.status == 200)
        rate = overload * tpm / 60 / per_request
        # Start half a second before a window boundary, so the run covers whole windows from its first second.
        await asyncio.sleep((c.window_seconds - 0.5 - time.time() % c.window_seconds) % c.window_seconds)
        before, cpu_before = await c.stats(session), c.cpu()
        run = await drive(c, key, seconds=seconds, concurrency=concurrency, max_tokens=max_tokens, rate=rate)
        after, cpu_after = await c.stats(session), c.cpu()
    requests = max(1, len(run.samples))
    tx_per_request = transactions(before, after) / requests
    return run, per_window(run, c.window_seconds, tpm), tx_per_request, (cpu_after - cpu_before) * 1000 / requests


async def idle_cpu_ms_per_second(c: Cluster, seconds: float = 10.0) -> float:
    """CPU the gateways spend with no requests at all: background refreshes and timers, spread over a slow load."""
    before = c.cpu()
    await asyncio.sleep(seconds)
    return (c.cpu() - before) * 1000 / seconds


async def cost_run(c: Cluster, limits: dict[str, Any], *, requests: int, concurrency: int) -> tuple[float, float, int]:
    """Load under any limit: (CPU ms per request, transactions per request, non-200 answers)."""
    async with aiohttp.ClientSession() as session:
        created = await c.admin(session, "POST", "subscriptions", {"name": "cost", **limits})
        key = created["primary_key"]
        await drive(c, key, seconds=2.0, concurrency=concurrency, max_tokens=16)
        before, cpu_before = await c.stats(session), c.cpu()
        started = time.monotonic()
        run = LoadRun()
        while len(run.samples) < requests and time.monotonic() - started < 120:
            more = await drive(c, key, seconds=2.0, concurrency=concurrency, max_tokens=16)
            run.samples += more.samples
        after, cpu_after = await c.stats(session), c.cpu()
    n = max(1, len(run.samples))
    return (cpu_after - cpu_before) * 1000 / n, transactions(before, after) / n, n - run.count(200)


def report(figures: list[WindowFigure], tx_per_request: float, cpu_ms: float, run: LoadRun) -> str:
    lines = [f"{'window (UTC)':<22}{'admitted':>10}{'limit':>9}{'ratio':>8}{'200s':>7}{'429s':>7}"]
    for f in figures:
        when = datetime.fromtimestamp(f.start, UTC).strftime("%H:%M:%S")
        lines.append(f"{when:<22}{f.admitted_tokens:>10}{f.cap:>9}{f.ratio:>8.3f}{f.ok:>7}{f.limited:>7}")
    other = {s.status for s in run.samples} - {200, 429}
    lines.append(
        f"requests {len(run.samples)} ({run.count(200)} admitted, {run.count(429)} refused, other statuses "
        f"{sorted(other) or 'none'}); storage transactions per request {tx_per_request:.4f}; "
        f"gateway CPU {cpu_ms:.3f} ms per request"
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    with cluster(3, window_seconds=args.window_seconds) as c:
        print(
            f"three gateways on one Azurite; limit {args.tpm} tokens per minute, enforced per {args.window_seconds} s "
            f"window; {args.overload}x offered for {args.minutes} minutes"
        )
        idle = await idle_cpu_ms_per_second(c)
        # One more second than the minutes: the run starts half a second before a boundary and ends after one.
        run, figures, tx, cpu = await limits_run(
            c, tpm=args.tpm, seconds=args.minutes * 60 + 1, overload=args.overload, max_tokens=args.max_tokens
        )
        print(report(figures, tx, cpu, run))
        rate = len(run.samples) / (run.ended - run.started)
        print(
            f"the three gateways idle use {idle:.1f} ms CPU per second (timers, refreshes, ledger); net of that, "
            f"{cpu - idle / rate:.3f} ms CPU per request at {rate:.0f} requests per second"
        )
        limited_cpu, limited_tx, bad = await cost_run(
            c, {"tokens_per_minute": 10**9, "requests_per_minute": 10**7}, requests=args.cost_requests, concurrency=32
        )
        print(
            f"under the limit, limits on (Table-backed TPM + RPM): {limited_cpu:.3f} ms CPU per request, "
            f"{limited_tx:.4f} storage transactions per request, {bad} non-200"
        )
        free_cpu, free_tx, bad = await cost_run(c, {}, requests=args.cost_requests, concurrency=32)
        print(
            f"same load, subscription without limits: {free_cpu:.3f} ms CPU per request, "
            f"{free_tx:.4f} storage transactions per request, {bad} non-200"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the overload run (bounded)")
    parser.add_argument("--tpm", type=int, default=60_000)
    parser.add_argument("--overload", type=float, default=3.0, help="offered load, in multiples of the limit")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--cost-requests", type=int, default=6000)
    parser.add_argument(
        "--window-seconds",
        type=int,
        default=60,
        help="GATEWAY_RATE_WINDOW_SECONDS: 60 (the minute) or a divisor of it, such as 10 for a short run",
    )
    args = parser.parse_args()
    if not 0 < args.minutes <= 10:
        parser.error("--minutes: between 0 and 10")
    if args.window_seconds < 1 or 60 % args.window_seconds:
        parser.error("--window-seconds: a divisor of 60")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
