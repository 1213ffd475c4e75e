"""Many long streams at once, direct to the simulator and through a gateway process, in one run.

N streamed chat completions are started at the same instant (each waits on
one event, then all send), first straight to one simulator backend, then
through a gateway started as its own process the way `make run` starts it
(`python -m local.host`). Printed for each path: streams ok / failed, time to
first byte p50 / p99; for the gateway: its CPU time per stream and per relayed
event (from /proc/<pid>/stat), and its resident memory idle and at its peak
(VmRSS, VmHWM from /proc/<pid>/status).

The gateway gets a slot for every stream (GATEWAY_MAX_CONNECTIONS_PER_BACKEND
is raised to the largest N unless `--env` sets it), so this measures the
relay; with the default of 1,000 the streams beyond it are shed with the
gateway's own 503 `gateway_overloaded`. The backend is the project's
simulator, served with a deep listen queue (see BACKEND_BACKLOG).

The load generator shares the cores with the simulator and the gateway, so on
a small machine the CPU figures are the ones to compare; times to first byte
include the load generator's own queueing.

Run: `python -m bench.streams_bench --streams 500 2000 5000`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import TICKS, cpu_seconds, free_port, gateway, process

PATH = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
SIM_HEADERS = {"api-key": "bench-key", "content-type": "application/json"}
GW_HEADERS = {"api-key": "bench-subscription-key", "content-type": "application/json"}


# aiohttp's default listen backlog (128) drops connection requests in a burst of a thousand; the kernel retries
# them 1, 3, 7 s later, which measures the listen queue, not the gateway. Both paths get the same backend.
BACKEND_BACKLOG = 4096


async def serve_simulator(port: int, tps: float) -> None:
    """The project's simulator with a deep listen queue (run in its own process by `backend()`)."""
    from aiohttp import web  # noqa: PLC0415

    from simulator import SimulatorConfig  # noqa: PLC0415
    from simulator.app import create_app  # noqa: PLC0415
    from simulator.config import Latency, Limits  # noqa: PLC0415

    config = SimulatorConfig(
        name="sim",
        deployments=("chat", "embed"),
        api_key="bench-key",
        limits=Limits(tpm=1_000_000_000),
        latency=Latency(tokens_per_second=tps),
    )
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=BACKEND_BACKLOG).start()
    await asyncio.Event().wait()


@contextmanager
def backend(tps: float) -> Iterator[str]:
    port = free_port()
    with process(["-m", "bench.streams_bench", "--serve-simulator", str(port), "--tps", str(tps)], port):
        yield f"http://127.0.0.1:{port}"


def raise_fd_limit() -> int:
    """Every stream holds a socket at each hop: let this process (and the children it starts) open enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (system time includes the kernel's loopback TCP work)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


class _Failed(Exception):  # a failed stream: its status and error code
    pass


@dataclass(slots=True)
class PathResult:
    ok: int
    failed: int
    ttfb: list[float]
    events: int
    seconds: float
    statuses: dict[str, int]

    def p(self, q: float) -> float:
        if not self.ttfb:
            return float("nan")
        ordered = sorted(self.ttfb)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def burst(url: str, headers: dict[str, str], body: bytes, n: int, deadline: float) -> PathResult:
    """`n` streams released together; each counts its events and checks it ended with [DONE]."""
    go = asyncio.Event()
    ttfb: list[float] = []
    statuses: dict[str, int] = {}
    counts = {"ok": 0, "failed": 0, "events": 0}
    timeout = aiohttp.ClientTimeout(total=deadline)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            await go.wait()
            started = time.perf_counter()
            outcome = "failed"
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    if resp.status != 200:  # say whose answer it was: the gateway's code, or the backend's
                        try:
                            code = json.loads(await resp.read())["error"]["code"]
                        except (ValueError, KeyError, TypeError):
                            code = "?"
                        raise _Failed(f"{resp.status} {code}")
                    first = await resp.content.readany()
                    ttfb.append(time.perf_counter() - started)
                    tail = first[-32:]
                    events = first.count(b"\n\n")
                    async for chunk in resp.content.iter_any():
                        events += chunk.count(b"\n\n")
                        tail = (tail + chunk)[-32:]
                    counts["events"] += events
                    outcome = str(resp.status)
                    if resp.status == 200 and tail.endswith(b"data: [DONE]\n\n"):
                        counts["ok"] += 1
                        return
            except _Failed as exc:
                outcome = str(exc)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            counts["failed"] += 1
            statuses[outcome] = statuses.get(outcome, 0) + 1

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0.2)  # every task is parked on the event
        started = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
    return PathResult(counts["ok"], counts["failed"], ttfb, counts["events"], seconds, statuses)


async def sample_peak(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], memory_kb(pid)["VmRSS"])
        await asyncio.sleep(0.05)


async def warm(url: str, headers: dict[str, str], body: bytes) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()


async def run(counts: list[int], tokens: int, tps: float, deadline: float, gateway_env: dict[str, str]) -> None:
    limit = raise_fd_limit()
    body = json.dumps(
        {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": tokens, "stream": True}
    ).encode()
    print(f"{tokens} tokens per answer at {tps:g} tokens/s; file descriptor limit {limit}")
    header = (
        f"{'streams':>8} {'path':<8} {'ok':>6} {'failed':>6} {'ttfb p50':>9} {'ttfb p99':>9} "
        f"{'cpu/stream':>11} {'cpu/event':>10} {'rss idle':>9} {'rss peak':>9} {'KB/stream':>10}"
    )
    rows: list[str] = []
    print(header, flush=True)
    with backend(tps) as sim_url:
        backends = [{"name": "sim", "endpoint": sim_url, "deployments": ["chat", "embed"],
                     "auth": {"type": "api_key", "setting": "SIM_KEY"}}]  # fmt: skip
        with gateway(backends, gateway_env) as (gw_url, gw_pid):
            await warm(sim_url + PATH, SIM_HEADERS, body.replace(str(tokens).encode(), b"5", 1))
            await warm(gw_url + PATH, GW_HEADERS, body.replace(str(tokens).encode(), b"5", 1))
            for n in counts:
                direct = await burst(sim_url + PATH, SIM_HEADERS, body, n, deadline)
                await asyncio.sleep(1.0)  # let the simulator's sockets close
                idle = memory_kb(gw_pid)["VmRSS"]
                fds_idle = open_fds(gw_pid)
                stop, peak = asyncio.Event(), [idle]
                sampler = asyncio.create_task(sample_peak(gw_pid, stop, peak))
                cpu_before, (user_before, _) = cpu_seconds(gw_pid), cpu_split(gw_pid)
                through = await burst(gw_url + PATH, GW_HEADERS, body, n, deadline)
                cpu = cpu_seconds(gw_pid) - cpu_before
                user = cpu_split(gw_pid)[0] - user_before
                stop.set()
                await sampler
                await asyncio.sleep(1.0)
                per_stream = cpu * 1000 / n
                per_event = cpu * 1e6 / max(1, through.events)
                kb_per_stream = (peak[0] - idle) / n
                for name, r in (("direct", direct), ("gateway", through)):
                    extra = (
                        f"{per_stream:>9.2f}ms {per_event:>8.1f}us {idle / 1024:>7.0f}MB {peak[0] / 1024:>7.0f}MB "
                        f"{kb_per_stream:>10.1f}"
                        if name == "gateway"
                        else ""
                    )
                    rows.append(
                        f"{n:>8} {name:<8} {r.ok:>6} {r.failed:>6} {r.p(0.5):>7.0f}ms {r.p(0.99):>7.0f}ms {extra}"
                    )
                    if r.statuses:
                        rows.append(f"{'':>8} {'':<8} failures: {r.statuses}")
                ratio = through.p(0.5) / direct.p(0.5) if direct.ttfb else float("nan")
                rows.append(
                    f"{'':>8} ttfb p50 gateway/direct {ratio:.2f}x;"
                    f" wall {direct.seconds:.1f}s / {through.seconds:.1f}s;"
                    f" cpu/event user {user * 1e6 / max(1, through.events):.1f}us;"
                    f" gateway fds idle {fds_idle}, now {open_fds(gw_pid)}"
                )
                print("\n".join(rows), flush=True)
                rows.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[500, 2000, 5000])
    parser.add_argument("--tokens", type=int, default=100, help="completion tokens per stream (max_tokens)")
    parser.add_argument("--tps", type=float, default=20.0, help="the simulator's tokens per second per stream")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds a stream may take before it fails")
    parser.add_argument("--env", action="append", default=[], help="gateway setting NAME=VALUE (repeatable)")
    parser.add_argument("--serve-simulator", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_simulator:
        import uvloop  # noqa: PLC0415 - as `python -m simulator` runs

        uvloop.run(serve_simulator(args.serve_simulator, args.tps))
        return
    # Measure the relay, not the default slot limit (1,000 streams per backend; the excess would be shed with
    # 503 gateway_overloaded): room for every stream unless --env says otherwise.
    env = {"GATEWAY_MAX_CONNECTIONS_PER_BACKEND": str(max(args.streams)), **dict(i.split("=", 1) for i in args.env)}
    asyncio.run(run(args.streams, args.tokens, args.tps, args.deadline, env))


if __name__ == "__main__":
    main()
