"""Serving the simulator: inside a running event loop (`running`), or in a daemon thread (`SimulatorThread`).

Both hand back a handle with `.url`, `.port` and the same control methods
(`set_faults`, `requests`, `stats`, ...). The thread's handle runs each
control call inside the server's loop, so tests in another thread never race
a request in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TypeVar

from aiohttp import web

from simulator.app import SIMULATOR, Simulator, create_app
from simulator.config import Latency, SimulatorConfig
from simulator.faults import Faults
from simulator.limits import Clock
from simulator.text import Embedder

T = TypeVar("T")

# Requests still running when the server stops get this long to finish (hung ones are released at once).
SHUTDOWN_SECONDS = 5.0


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving `app`; returns the runner (for `cleanup()`) and the port actually bound."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


class _Handle:
    """The control methods shared by both ways of running; `_call` decides which thread they run in."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _call(self, fn: Callable[[Simulator], T]) -> T:
        raise NotImplementedError

    def set_faults(self, faults: Faults | None = None, /, *, merge: bool = False, **fields: object) -> Faults:
        """Replace the fault set (merge=True: change only the given fields): `set_faults(error_rate=1, count=2)`."""
        return self._call(lambda sim: sim.set_faults(faults, merge=merge, **fields))

    def clear_faults(self) -> None:
        self._call(Simulator.clear_faults)

    def faults(self) -> Faults:
        return self._call(lambda sim: sim.faults.current)

    def set_latency(self, *, ttft_ms: float | None = None, tokens_per_second: float | None = None) -> Latency:
        return self._call(lambda sim: sim.set_latency(ttft_ms=ttft_ms, tokens_per_second=tokens_per_second))

    def requests(self, limit: int | None = None) -> list[dict[str, object]]:
        return self._call(lambda sim: sim.requests(limit))

    def clear_requests(self) -> None:
        self._call(Simulator.clear_requests)

    def stats(self) -> dict[str, object]:
        return self._call(Simulator.stats)

    def reset_limits(self) -> None:
        self._call(Simulator.reset_limits)

    def reset(self) -> None:
        self._call(Simulator.reset)


class RunningSimulator(_Handle):
    """A simulator serving in the caller's own event loop."""

    def __init__(self, sim: Simulator, host: str, port: int) -> None:
        self.sim = sim
        self.host = host
        self.port = port

    def _call(self, fn: Callable[[Simulator], T]) -> T:
        return fn(self.sim)


@asynccontextmanager
async def running(
    config: SimulatorConfig | None = None, *, clock: Clock | None = None, embedder: Embedder | None = None
) -> AsyncIterator[RunningSimulator]:
    """Serve a simulator in the current event loop for the duration of the block."""
    config = config or SimulatorConfig()
    app = create_app(config, clock=clock, embedder=embedder)
    runner, port = await serve(app, config.host, config.port)
    try:
        yield RunningSimulator(app[SIMULATOR], config.host, port)
    finally:
        await runner.cleanup()


class SimulatorThread(_Handle):
    """A simulator with its own event loop in a daemon thread: `SimulatorThread(config).start()` ... `.stop()`."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, clock: Clock | None = None, embedder: Embedder | None = None
    ) -> None:
        self.config = config or SimulatorConfig()
        self.host = self.config.host
        self.port = 0
        # Built here, in the caller's thread, so a bad configuration fails in the caller.
        self._app = create_app(self.config, clock=clock, embedder=embedder)
        self.sim = self._app[SIMULATOR]
        self._ready = threading.Event()
        self._error: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"simulator-{self.config.name}", daemon=True)

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"simulator {self.config.name} did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[[Simulator], T]) -> T:
        if self._loop is None:
            raise RuntimeError("the simulator is not running")

        async def call() -> T:
            return fn(self.sim)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            runner, self.port = await serve(self._app, self.host, self.config.port)
        except OSError as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()
