"""Gateway overhead, side by side in one run: the simulator called directly, then through the gateway.

Non-streamed small completions at 32 connections with auth and metrics on:
requests per second, p50/p99 latency, and the gateway process's CPU
milliseconds per request (from /proc/<pid>/stat, the figure that stays stable
on a noisy machine). Then the time to first byte of a stream at concurrency 1,
direct and through the gateway, and the import time of `function_app`.

Run: `python -m bench.proxy_bench [--requests 6000]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time

import aiohttp

from bench.common import ROOT, cpu_seconds, gateway, load, simulator

CHAT = json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5}).encode()
STREAM = json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5, "stream": True}).encode()
PATH = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"


async def ttfb(url: str, headers: dict[str, str], n: int) -> list[float]:
    """Time to the first body byte of a streamed completion, one request at a time."""
    samples = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.post(url, data=STREAM, headers=headers) as resp:
                await resp.content.readany()
                samples.append(time.perf_counter() - started)
                await resp.read()
    return samples


def import_time_ms() -> float:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import function_app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    match = re.search(r"\|\s*(\d+)\s*\|\s*function_app\s*$", out, re.M)
    return int(match.group(1)) / 1000 if match else float("nan")


async def run(requests: int, concurrency: int) -> None:
    sim_headers = {"api-key": "bench-key", "content-type": "application/json"}
    gw_headers = {"api-key": "bench-subscription-key", "content-type": "application/json"}
    with simulator() as sim_url:
        backends = [{"name": "sim", "endpoint": sim_url, "deployments": ["chat", "embed"],
                     "auth": {"type": "api_key", "setting": "SIM_KEY"}}]  # fmt: skip
        with gateway(backends) as (gw_url, gw_pid):
            # warm both paths (connections, lazy imports)
            await load(sim_url + PATH, sim_headers, CHAT, concurrency=concurrency, total=500)
            await load(gw_url + PATH, gw_headers, CHAT, concurrency=concurrency, total=500)

            direct = await load(sim_url + PATH, sim_headers, CHAT, concurrency=concurrency, total=requests)
            before = cpu_seconds(gw_pid)
            through = await load(gw_url + PATH, gw_headers, CHAT, concurrency=concurrency, total=requests)
            gw_cpu_ms = (cpu_seconds(gw_pid) - before) * 1000 / max(1, through.requests)

            direct_ttfb = await ttfb(sim_url + PATH, sim_headers, 200)
            gw_ttfb = await ttfb(gw_url + PATH, gw_headers, 200)

    print(f"non-streamed chat, {concurrency} connections, {requests} requests each")
    print(f"{'path':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, r in (("direct", direct), ("gateway", through)):
        print(f"{name:<10}{r.rps:>10.0f}{r.percentile(0.5):>10.2f}{r.percentile(0.99):>10.2f}{r.errors:>8}")
    print(f"gateway CPU per request: {gw_cpu_ms:.3f} ms (target <= 0.3)")
    added = (statistics.median(gw_ttfb) - statistics.median(direct_ttfb)) * 1000
    print(
        f"stream time to first byte, concurrency 1: direct p50 {statistics.median(direct_ttfb) * 1000:.2f} ms, "
        f"gateway p50 {statistics.median(gw_ttfb) * 1000:.2f} ms, added {added:.2f} ms (target < 1)"
    )
    print(f"import function_app: {import_time_ms():.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.concurrency))


if __name__ == "__main__":
    main()
