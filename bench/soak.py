"""A soak: mixed streamed and unary load at a steady, moderate rate through a gateway process, for minutes.

Streams (100 tokens at 20 tokens/s, about five seconds each) and small unary
completions arrive at fixed rates, open loop, against one simulator backend.
The gateway's resident memory (VmRSS) and open file descriptors are printed
after a warm-up, every minute, at the end under load, and again once the
load has stopped and idle connections have expired: both should be flat.

Run: `python -m bench.soak --minutes 10 [--streams-per-second 20 --unary-per-second 40]`
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp

from bench.common import gateway
from bench.streams_bench import GW_HEADERS, PATH, backend, memory_kb, open_fds, raise_fd_limit

WARMUP_SECONDS = 30.0
IDLE_SECONDS = 40.0  # longer than the gateway's keep-alive (30 s): idle backend connections are closed by then
MAX_IN_FLIGHT = 2000  # a stalled gateway makes the soak fail, not grow without bound


def _body(stream: bool, tokens: int) -> bytes:
    return json.dumps(
        {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": tokens, "stream": stream}
    ).encode()


class Load:
    def __init__(self, url: str) -> None:
        self.url = url
        self.counts = {"stream_ok": 0, "stream_failed": 0, "unary_ok": 0, "unary_failed": 0, "skipped": 0}
        self.statuses: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, session: aiohttp.ClientSession, body: bytes, stream: bool) -> None:
        kind = "stream" if stream else "unary"
        outcome = "failed"
        try:
            async with session.post(self.url, data=body, headers=GW_HEADERS) as resp:
                data = await resp.read()
                if resp.status == 200 and (not stream or data.rstrip().endswith(b"data: [DONE]")):
                    outcome = "ok"
                else:
                    self.statuses[str(resp.status)] = self.statuses.get(str(resp.status), 0) + 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.statuses[type(exc).__name__] = self.statuses.get(type(exc).__name__, 0) + 1
        self.counts[f"{kind}_{outcome}"] += 1

    async def run(self, seconds: float, streams_per_second: float, unary_per_second: float) -> None:
        stream_body, unary_body = _body(True, 100), _body(False, 5)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            loop = asyncio.get_running_loop()
            started = loop.time()
            sent = {"stream": 0, "unary": 0}
            while (elapsed := loop.time() - started) < seconds:
                for kind, rate, body in (
                    ("stream", streams_per_second, stream_body),
                    ("unary", unary_per_second, unary_body),
                ):
                    while sent[kind] < elapsed * rate:
                        sent[kind] += 1
                        if len(self._tasks) >= MAX_IN_FLIGHT:
                            self.counts["skipped"] += 1
                            continue
                        task = loop.create_task(self._one(session, body, kind == "stream"))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                await asyncio.sleep(0.01)
            if self._tasks:
                await asyncio.wait(set(self._tasks))


async def run(minutes: float, streams_per_second: float, unary_per_second: float) -> None:
    raise_fd_limit()
    with backend(20.0) as sim_url:
        backends = [{"name": "sim", "endpoint": sim_url, "deployments": ["chat", "embed"],
                     "auth": {"type": "api_key", "setting": "SIM_KEY"}}]  # fmt: skip
        with gateway(backends) as (gw_url, pid):
            load = Load(gw_url + PATH)

            def sample(label: str) -> tuple[int, int]:
                rss, fds = memory_kb(pid)["VmRSS"], open_fds(pid)
                print(f"{label:<28} rss {rss / 1024:7.1f} MB   open fds {fds:5d}   {load.counts}", flush=True)
                return rss, fds

            print(
                f"soak: {minutes:g} min, {streams_per_second:g} streams/s (100 tokens at 20 tokens/s) "
                f"+ {unary_per_second:g} unary/s, gateway pid {pid}",
                flush=True,
            )
            samples: dict[str, tuple[int, int]] = {}

            async def sampler() -> None:
                await asyncio.sleep(WARMUP_SECONDS)
                samples["start"] = sample("start (after warm-up)")
                for minute in range(1, int(minutes) + 1):
                    await asyncio.sleep(min(60.0, minutes * 60 - (minute - 1) * 60 - 1))
                    samples["end"] = sample(f"minute {minute}" if minute < minutes else "end (under load)")

            watcher = asyncio.create_task(sampler())
            await load.run(WARMUP_SECONDS + minutes * 60, streams_per_second, unary_per_second)
            await watcher
            start, end = samples["start"], samples.get("end", samples["start"])
            await asyncio.sleep(IDLE_SECONDS)
            idle = sample(f"after {IDLE_SECONDS:.0f} s idle")
            print(
                f"rss start {start[0] / 1024:.1f} MB -> end {end[0] / 1024:.1f} MB ({(end[0] - start[0]) / 1024:+.1f});"
                f" open fds start {start[1]} -> end {end[1]}, idle {idle[1]}; failures by status {load.statuses}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams-per-second", type=float, default=20.0)
    parser.add_argument("--unary-per-second", type=float, default=40.0)
    args = parser.parse_args()
    asyncio.run(run(args.minutes, args.streams_per_second, args.unary_per_second))


if __name__ == "__main__":
    main()
