"""The fault matrix over real HTTP: one fault per row, client-visible errors within what the breaker rule predicts.

Two simulator backends of equal priority behind the gateway (the in-process
host of `tests/fixtures/servers.py`), a fresh gateway per row. The rows, the
prediction and the bound of each live in `bench.fault_matrix`, which also runs
a longer version: `python -m bench.fault_matrix`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bench.fault_matrix import MIN_REQUESTS, ROWS, Row, run_row, simulators, table
from shared.gateway import Gateway
from simulator import SimulatorThread
from tests.fixtures.servers import GatewayServer, settings_for

pytestmark = pytest.mark.slow

REQUESTS = 80  # enough for every breaker to reach min_requests (20) and trip; about a second per row
CONCURRENCY = 4


@pytest.fixture(scope="module")
def sims() -> Iterator[tuple[SimulatorThread, SimulatorThread]]:
    with simulators() as pair:
        yield pair


@pytest.fixture
def start(gateway_server: Callable[..., GatewayServer]) -> Callable[..., Any]:
    @contextmanager
    def start_gateway(backends: list[dict[str, Any]], env: dict[str, str]) -> Iterator[str]:
        settings = settings_for(backends, **env)
        server = gateway_server(lambda: Gateway(settings))
        try:
            yield server.url
        finally:
            server.stop()

    return start_gateway


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_client_visible_errors_stay_within_the_rules_bound(
    row: Row, sims: tuple[SimulatorThread, SimulatorThread], start: Callable[..., Any]
) -> None:
    result = run_row(start, sims, row, REQUESTS, CONCURRENCY)
    print("\n" + table([result]))  # the figures, with -s
    assert result.errors <= result.prediction.bound, result.prediction.why
    if row.poison:
        assert result.poison_errors == REQUESTS // 2  # the poison itself is refused every time, blamed on neither
    # The faulty backend is tripped by the rate rule; a throttle, 30 % on both or a poison trips nothing.
    assert result.breakers == {"a": "open" if row.trips else "closed", "b": "closed"}
    if "first byte" in row.name or "hang" in row.name:
        # Attempts given up at the timeout are counted. The breaker stops them once half of at least
        # min_requests failed (the warm-up's successes count too), plus what was in flight.
        assert MIN_REQUESTS // 2 <= result.abandoned <= MIN_REQUESTS + CONCURRENCY - 1
