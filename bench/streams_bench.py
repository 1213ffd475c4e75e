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

CPU per event is read two ways. `cpu/event` divides all of a burst's CPU by
its events, so it includes what each stream costs once (accepting the caller,
auth, limits, routing, the backend's connection, metering). A second burst of
the same N with longer answers (`--slope-tokens`, 400 by default) gives the
slope: the marginal CPU of one more relayed event, which is what the relay
itself costs, and the fixed CPU per stream the line leaves over. `--floor`
also relays every burst through `bench.relay_floor`, the same host stack
(uvicorn, uvloop, httptools, aiohttp) with nothing of the gateway in it: the
CPU the sockets, the event loop and the HTTP framing cost on their own.

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
from contextlib import ExitStack, contextmanager
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


@dataclass(slots=True)
class Measured:
    """One burst through a relaying process: what the callers saw and what it cost that process."""

    result: PathResult
    cpu: float  # seconds, user + system
    user: float
    idle_kb: int
    peak_kb: int

    def per_event_us(self) -> float:
        return self.cpu * 1e6 / max(1, self.result.events)

    def kb_per_stream(self, n: int) -> float:
        return (self.peak_kb - self.idle_kb) / n


async def measured_burst(url: str, pid: int, body: bytes, n: int, deadline: float) -> Measured:
    await asyncio.sleep(1.0)  # let the last burst's sockets close
    idle = memory_kb(pid)["VmRSS"]
    stop, peak = asyncio.Event(), [idle]
    sampler = asyncio.create_task(sample_peak(pid, stop, peak))
    cpu_before, (user_before, _) = cpu_seconds(pid), cpu_split(pid)
    result = await burst(url + PATH, GW_HEADERS, body, n, deadline)
    cpu, user = cpu_seconds(pid) - cpu_before, cpu_split(pid)[0] - user_before
    stop.set()
    await sampler
    return Measured(result, cpu, user, idle, peak[0])


def slope(short: Measured, long: Measured, n: int) -> tuple[float, float]:
    """CPU per relayed event (µs) at the margin, and the fixed CPU per stream (ms) that the line leaves over.

    Two bursts of the same N streams, one with longer answers: the extra CPU over the extra events is what
    one more relayed event costs, apart from everything a stream costs once (accepting the caller, auth,
    limits, routing, the backend's connection, metering, the ledger).
    """
    events = long.result.events - short.result.events
    if events <= 0:
        return float("nan"), float("nan")
    marginal = (long.cpu - short.cpu) / events
    return marginal * 1e6, (short.cpu - marginal * short.result.events) * 1000 / n


def body_for(tokens: int) -> bytes:
    return json.dumps(
        {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": tokens, "stream": True}
    ).encode()


async def run(
    counts: list[int],
    tokens: int,
    tps: float,
    deadline: float,
    gateway_env: dict[str, str],
    *,
    slope_tokens: int,
    floor: str | None,
) -> None:
    limit = raise_fd_limit()
    body = body_for(tokens)
    print(f"{tokens} tokens per answer at {tps:g} tokens/s; file descriptor limit {limit}")
    header = (
        f"{'streams':>8} {'path':<8} {'ok':>6} {'failed':>6} {'ttfb p50':>9} {'ttfb p99':>9} "
        f"{'cpu/stream':>11} {'cpu/event':>10} {'rss idle':>9} {'rss peak':>9} {'KB/stream':>10}"
    )
    rows: list[str] = []
    print(header, flush=True)
    with backend(tps) as sim_url, ExitStack() as stack:
        backends = [{"name": "sim", "endpoint": sim_url, "deployments": ["chat", "embed"],
                     "auth": {"type": "api_key", "setting": "SIM_KEY"}}]  # fmt: skip
        gw_url, gw_pid = stack.enter_context(gateway(backends, gateway_env))
        relays = [("gateway", gw_url, gw_pid)]
        if floor:
            port = free_port()
            args = ["-m", "bench.relay_floor", "--port", str(port), "--backend", sim_url, "--mode", floor]
            relays.append(("floor", f"http://127.0.0.1:{port}", stack.enter_context(process(args, port)).pid))
        await warm(sim_url + PATH, SIM_HEADERS, body_for(5))
        for _, url, _ in relays:
            await warm(url + PATH, GW_HEADERS, body_for(5))
        for n in counts:
            direct = await burst(sim_url + PATH, SIM_HEADERS, body, n, deadline)
            rows.append(
                f"{n:>8} {'direct':<8} {direct.ok:>6} {direct.failed:>6}"
                f" {direct.p(0.5):>7.0f}ms {direct.p(0.99):>7.0f}ms"
            )
            if direct.statuses:
                rows.append(f"{'':>8} {'':<8} failures: {direct.statuses}")
            for name, url, pid in relays:
                fds_idle = open_fds(pid) if name == "gateway" else 0
                m = await measured_burst(url, pid, body, n, deadline)
                r = m.result
                rows.append(
                    f"{n:>8} {name:<8} {r.ok:>6} {r.failed:>6} {r.p(0.5):>7.0f}ms {r.p(0.99):>7.0f}ms "
                    f"{m.cpu * 1000 / n:>9.2f}ms {m.per_event_us():>8.1f}us {m.idle_kb / 1024:>7.0f}MB "
                    f"{m.peak_kb / 1024:>7.0f}MB {m.kb_per_stream(n):>10.1f}"
                )
                if r.statuses:
                    rows.append(f"{'':>8} {'':<8} failures: {r.statuses}")
                ratio = r.p(0.5) / direct.p(0.5) if direct.ttfb else float("nan")
                line = (
                    f"{'':>8} {name}: ttfb p50 {name}/direct {ratio:.2f}x;"
                    f" wall {direct.seconds:.1f}s / {r.seconds:.1f}s;"
                    f" cpu/event user {m.user * 1e6 / max(1, r.events):.1f}us"
                )
                if name == "gateway":
                    line += f"; fds idle {fds_idle}, now {open_fds(pid)}"
                if slope_tokens > tokens:
                    long = await measured_burst(url, pid, body_for(slope_tokens), n, deadline)
                    marginal, fixed = slope(m, long, n)
                    line += (
                        f"\n{'':>8} {name}: marginal {marginal:.1f}us per relayed event, fixed {fixed:.2f}ms per stream"
                        f" (slope of {tokens} and {slope_tokens} tokens: {long.cpu * 1000 / n:.2f}ms per stream,"
                        f" {long.result.failed} failed)"
                    )
                rows.append(line)
            print("\n".join(rows), flush=True)
            rows.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[500, 2000, 5000])
    parser.add_argument("--tokens", type=int, default=100, help="completion tokens per stream (max_tokens)")
    parser.add_argument("--tps", type=float, default=20.0, help="the simulator's tokens per second per stream")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds a stream may take before it fails")
    parser.add_argument(
        "--slope-tokens",
        type=int,
        default=400,
        help="a second gateway burst with answers this long: the CPU slope per event and fixed per stream (0: off)",
    )
    parser.add_argument(
        "--floor",
        choices=("asgi", "starlette"),
        help="also relay every burst through bench.relay_floor (the host stack with nothing of the gateway)",
    )
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
    asyncio.run(
        run(
            args.streams,
            args.tokens,
            args.tps,
            args.deadline,
            env,
            slope_tokens=args.slope_tokens,
            floor=args.floor,
        )
    )


if __name__ == "__main__":
    main()
