"""The fault matrix: two simulator backends, one fault per row, and how many errors callers see against the rule.

Each row starts a fresh gateway (fresh breakers) in front of two simulators of
equal priority and weight, injects one fault, sends `requests` requests over
`concurrency` connections, and counts the answers a caller would call errors
(any status but 200, or a stream that ends in an error event). Each row
states what the breaker rule (README, "Circuit breaker"; `shared.blame`)
predicts and the bound the test holds it to:

    python -m bench.fault_matrix [--requests 400] [--concurrency 4]

`tests/test_fault_matrix.py` runs the same rows, smaller, in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.common import create_subscription
from simulator import SimulatorConfig, SimulatorThread

SIM_KEY = "bench-key"
ADMIN_KEY = "fault-matrix-admin-key"
DEMO_KEY = "bench-subscription-key"
CHAT = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
FIRST_BYTE_TIMEOUT = 1.0  # generous: on a busy 2-core machine a healthy first byte can take a few hundred ms
MIN_REQUESTS = 20
BREAKER = {"failure_rate": 0.5, "min_requests": MIN_REQUESTS, "window_seconds": 60, "trip_seconds": 120}
GOOD = {"messages": [{"role": "user", "content": "Tell me about load balancing"}], "max_tokens": 8}
POISON = b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 8}'  # a lone surrogate: 500

# (backends, settings) -> a running gateway's base URL; the test uses its in-process fixture, the bench a process.
StartGateway = Callable[[list[dict[str, Any]], dict[str, str]], AbstractContextManager[str]]


@dataclass(frozen=True, slots=True)
class Prediction:
    expected: float  # what the rule predicts, on average
    bound: int  # the most client-visible errors the test accepts
    why: str


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    faults_a: dict[str, Any]
    faults_b: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    poison: bool = False  # half the requests are a poison body from one subscription, half good ones from another
    predict: Callable[[int, int], Prediction] = lambda n, c: Prediction(0, 0, "every failure fails over")
    trips: bool = True  # whether backend a's breaker should be open at the end


def _binomial_bound(n: int, p: float) -> int:
    """Mean plus four standard deviations: a bound a correct rule exceeds about once in 30,000 runs."""
    return math.ceil(n * p + 4 * math.sqrt(n * p * (1 - p)))


def _cut_streams(n: int, c: int) -> Prediction:
    # No failover after the first event: every stream sent to the cutter before its breaker opens is an error.
    # All of its requests fail, so it opens at its MIN_REQUESTS-th; up to c - 1 more were already in flight.
    return Prediction(
        min(MIN_REQUESTS, n / 2),
        MIN_REQUESTS + c - 1,
        f"streams cut before the breaker opens: min_requests ({MIN_REQUESTS}) + in flight ({c - 1})",
    )


def _both_failing(n: int, c: int) -> Prediction:
    # A request fails only when both backends fail it (0.3 * 0.3); the failures each backend is blamed for
    # (it failed, the other succeeded: 0.3 * 0.7 of its share) stay near 23 % of its requests, under 50 %.
    return Prediction(n * 0.09, _binomial_bound(n, 0.09), "both backends fail the request: 0.3 x 0.3 = 9 %")


def _poison(n: int, c: int) -> Prediction:
    return Prediction(
        0, 0, "the poison fails on both backends: blamed on neither; the other subscription sees no error"
    )


ROWS: tuple[Row, ...] = (
    Row("one backend down", {"down": True}),
    Row("500s on one backend", {"error_rate": 1.0, "error_status": 500}),
    Row("slow first byte on one", {"slow_first_byte_ms": 3000}),
    Row("hang on one", {"hang": True}),
    Row("cut mid-stream on one", {"drop_mid_stream_after": 3}, stream=True, predict=_cut_streams),
    # A 429 is a throttle, not a failure: a is skipped for its Retry-After, its breaker stays closed.
    Row("429 storm on one", {"throttle_rate": 1.0, "retry_after": 1}, trips=False),
    Row(
        "30 % errors on both",
        {"error_rate": 0.3, "error_status": 500, "seed": 1},
        {"error_rate": 0.3, "error_status": 500, "seed": 2},
        predict=_both_failing,
        trips=False,
    ),
    Row("poison request from one subscription", {}, poison=True, predict=_poison, trips=False),
)


@dataclass(slots=True)
class RowResult:
    row: Row
    requests: int
    errors: int  # client-visible, excluding the poison subscription's own requests
    prediction: Prediction
    poison_errors: int = 0
    breakers: dict[str, str] = field(default_factory=dict)
    abandoned: int = 0
    seconds: float = 0.0

    @property
    def within(self) -> bool:
        return self.errors <= self.prediction.bound


@contextmanager
def simulators() -> Iterator[tuple[SimulatorThread, SimulatorThread]]:
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(SimulatorThread(SimulatorConfig(name=n, deployments=("chat",), api_key=SIM_KEY)))
            for n in ("a", "b")
        )
        yield a, b


def backends(sims: tuple[SimulatorThread, SimulatorThread]) -> list[dict[str, Any]]:
    return [
        {
            "name": sim.config.name,
            "endpoint": sim.url,
            "priority": 1,
            "deployments": ["chat"],
            "timeouts": {"first_byte": FIRST_BYTE_TIMEOUT},
            "auth": {"type": "api_key", "setting": "SIM_KEY"},
        }
        for sim in sims
    ]


SETTINGS = {
    "SIM_KEY": SIM_KEY,
    "GATEWAY_BREAKER": json.dumps(BREAKER),
    "GATEWAY_ADMIN_KEY": ADMIN_KEY,
    "GATEWAY_DEMO_KEY": DEMO_KEY,
}


async def _failed(session: aiohttp.ClientSession, url: str, key: str, body: bytes) -> bool:
    """One request as a caller sees it: an error is any status but 200, or a stream that does not end well."""
    headers = {"api-key": key, "content-type": "application/json"}
    async with session.post(url + CHAT, data=body, headers=headers) as response:
        payload = await response.read()
        if response.status != 200:
            return True
        return b"text/event-stream" in response.headers.get("content-type", "").encode() and (
            b"data: [DONE]" not in payload or b'"error"' in payload
        )


async def drive(url: str, row: Row, requests: int, concurrency: int) -> RowResult:
    started = time.monotonic()
    good = json.dumps({**GOOD, "stream": True} if row.stream else GOOD).encode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        poisoner = await create_subscription(session, url, ADMIN_KEY, "poisoner") if row.poison else ""
        errors = poison_errors = 0
        queue = list(range(requests))

        async def worker() -> None:
            nonlocal errors, poison_errors
            while queue:
                i = queue.pop()
                poisoned = row.poison and i % 2 == 0
                # Awaited before adding: `x += await f()` reads x before the await and loses other workers' adds.
                failed = await _failed(session, url, poisoner if poisoned else DEMO_KEY, POISON if poisoned else good)
                if poisoned:
                    poison_errors += failed
                else:
                    errors += failed

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.sleep(0.3)  # streams settle (and report to their breakers) after the last event
        admin = {"x-admin-key": ADMIN_KEY}
        async with session.get(f"{url}/gateway/admin/backends", headers=admin) as response:
            report = await response.json()
        async with session.get(f"{url}/gateway/admin/stats", headers=admin) as response:
            stats = await response.json()
    sent = requests - (requests + 1) // 2 if row.poison else requests
    return RowResult(
        row,
        sent,
        errors,
        row.predict(sent, concurrency),
        poison_errors=poison_errors,
        breakers={r["backend"]: r["breaker"] for r in report["data"]},
        abandoned=int(stats.get("abandoned", {}).get("attempts", 0)),
        seconds=time.monotonic() - started,
    )


def run_row(
    start_gateway: StartGateway,
    sims: tuple[SimulatorThread, SimulatorThread],
    row: Row,
    requests: int,
    concurrency: int,
) -> RowResult:
    a, b = sims
    try:
        with start_gateway(backends(sims), SETTINGS) as url:
            asyncio.run(_warm_up(url, concurrency))  # connections open, code loaded: the row measures faults
            for sim, faults in ((a, row.faults_a), (b, row.faults_b)):
                sim.reset()
                if faults:
                    sim.set_faults(**faults)
            return asyncio.run(drive(url, row, requests, concurrency))
    finally:
        a.reset()
        b.reset()


async def _warm_up(url: str, concurrency: int) -> None:
    body = json.dumps(GOOD).encode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(2):
            await asyncio.gather(*(_failed(session, url, DEMO_KEY, body) for _ in range(concurrency)))


HEADER = ("row", "requests", "client-visible errors", "rule predicts", "bound", "breakers a/b", "abandoned")


def table(results: list[RowResult]) -> str:
    lines = [HEADER]
    for r in results:
        extra = f" (+{r.poison_errors} poison, all refused)" if r.row.poison else ""
        lines.append(
            (
                r.row.name,
                str(r.requests),
                f"{r.errors}{extra}",
                f"~{r.prediction.expected:.0f}: {r.prediction.why}",
                f"<= {r.prediction.bound}",
                f"{r.breakers.get('a', '?')}/{r.breakers.get('b', '?')}",
                str(r.abandoned),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


@contextmanager
def _process_gateway(backend_list: list[dict[str, Any]], settings: dict[str, str]) -> Iterator[str]:
    from bench.common import gateway  # noqa: PLC0415 - the bench runs the gateway as its own process

    with gateway(backend_list, settings) as (url, _):
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    results = []
    with simulators() as sims:
        for row in ROWS:
            results.append(run_row(_process_gateway, sims, row, args.requests, args.concurrency))
            print(f"{row.name}: {results[-1].errors} errors in {results[-1].seconds:.1f} s", flush=True)
    print(table(results))
    if not all(r.within for r in results):
        raise SystemExit("some rows exceeded their bound")


if __name__ == "__main__":
    main()
