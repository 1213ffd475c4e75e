"""Helpers the benchmarks share: start processes on 127.0.0.1, read their CPU time, drive bounded load."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from devtools.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextmanager
def process(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # a pipe nobody reads would block a chatty process
    )
    try:
        wait_for_port(port, timeout=30, exit_code=proc.poll, name=" ".join(args[:2]))
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def simulator(name: str = "sim", key: str = "bench-key", extra: list[str] | None = None) -> Iterator[str]:
    port = free_port()
    args = ["-m", "simulator", "--host", "127.0.0.1", "--port", str(port), "--name", name]
    args += ["--deployments", "chat,embed", "--api-key", key, "--tpm", "1000000000", *(extra or [])]
    with process(args, port):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def gateway(backends: list[dict[str, object]], env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    port = free_port()
    settings = {
        "GATEWAY_BACKENDS": json.dumps(backends),
        "SIM_KEY": "bench-key",
        "GATEWAY_DEMO_KEY": "bench-subscription-key",
        "GATEWAY_PROBE_SCHEDULE": "0 0 0 1 1 *",  # effectively never during a run
        "GATEWAY_METRICS_ENDPOINT": "true",  # metrics on: counted in process and served at /metrics
        **(env or {}),
    }
    with process(["-m", "local.host", "--port", str(port), "--log-level", "WARNING"], port, settings) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


async def load(
    url: str, headers: dict[str, str], body: bytes, *, concurrency: int, total: int, max_seconds: float = 60
) -> LoadResult:
    """`total` POSTs over `concurrency` connections, stopping early after `max_seconds`."""
    latencies: list[float] = []
    errors = 0
    remaining = total
    deadline = time.monotonic() + max_seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(len(latencies), errors, elapsed, latencies)


async def create_subscription(session: aiohttp.ClientSession, url: str, admin_key: str, name: str) -> str:
    """A new subscription through the admin API; its primary key."""
    async with session.post(
        f"{url}/gateway/admin/subscriptions", json={"name": name}, headers={"x-admin-key": admin_key}
    ) as response:
        if response.status != 201:
            raise RuntimeError(f"could not create a subscription: {await response.text()}")
        key: str = (await response.json())["primary_key"]
        return key
