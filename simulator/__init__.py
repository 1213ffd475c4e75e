"""The project's Azure OpenAI simulator: Azure's shapes, limits and failures, checked against its REST specification.

Chat completions (tool calls, structured output, content-filter results),
embeddings, the Responses API, files, batches, images and audio, in the
deployment-scoped / api-version paths and the v1 paths. Stored responses,
files and batches belong to one instance, as they belong to one Azure
resource. It stands in for Azure OpenAI in `make run` (several backends,
one flaky), in end-to-end tests that script failures (`set_faults`, or
`/_sim/faults` over HTTP), and in benchmarks as the zero-latency baseline.

    with SimulatorThread(SimulatorConfig(deployments=("gpt-4o-mini",))) as sim:
        sim.set_faults(error_rate=1.0, error_status=503, count=2)
        ...  # call sim.url with the openai SDK; read sim.requests()

Run it alone with `python -m simulator --help`.
"""

from __future__ import annotations

from simulator.app import SIMULATOR, Simulator, create_app
from simulator.config import Latency, Limits, SimulatorConfig
from simulator.faults import FaultError, Faults
from simulator.limits import Clock, SystemClock
from simulator.server import RunningSimulator, SimulatorThread, running, serve
from simulator.text import Embedder, hash_embed

__all__ = [
    "SIMULATOR",
    "Clock",
    "Embedder",
    "FaultError",
    "Faults",
    "Latency",
    "Limits",
    "RunningSimulator",
    "Simulator",
    "SimulatorConfig",
    "SimulatorThread",
    "SystemClock",
    "create_app",
    "hash_embed",
    "running",
    "serve",
]
