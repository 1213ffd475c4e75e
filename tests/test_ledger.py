"""The usage ledger: batched, idempotent writes that lose nothing at exit, on both store implementations.

The contract tests run against the embedded store and against Table Storage
on Azurite; the end-to-end tests drive the gateway with the simulator and
compare the ledger with the usage the simulator reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.ports import NotListening, free_port, wait_for_port
from shared.clock import ManualClock
from shared.config import StorageConfig
from shared.errors import StoreUnavailable
from shared.ledger import HOUR, Ledger, hour_of, price
from shared.models import Caller, Limits, Usage
from shared.outcomes import Outcome, RequestRecord
from shared.stores.embedded import EmbeddedLedgerStore
from shared.stores.protocols import LedgerStore, UsageBatch, UsageCounts, UsageKey, UsageRow
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.observed import backend, observe
from tests.fixtures.servers import GatewayServer

PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}
DEPLOYMENTS = frozenset({"gpt-4o-mini", "text-embedding-3-small"})
ALICE = Caller("sub-alice", "alice", Limits())
BOB = Caller("sub-bob", "bob", Limits())
ALICE_KEY, BOB_KEY = "alice-key-0123456789", "bob-key-0123456789"
PRICED = {"GATEWAY_PRICES": json.dumps(PRICES)}
ROOT = Path(__file__).resolve().parent.parent


def record(
    caller: Caller | None = ALICE,
    *,
    prompt: int = 10,
    completion: int = 5,
    outcome: Outcome = Outcome.SUCCESS,
    deployment: str = "gpt-4o-mini",
    backend: str = "east",
    saved: int = 0,
) -> RequestRecord:
    usage = Usage(prompt, completion) if outcome is Outcome.SUCCESS else None
    return RequestRecord(
        "req-1",
        "chat/completions",
        status=200,
        outcome=outcome,
        caller=caller,
        deployment=deployment,
        backend=None if outcome is Outcome.CACHE_HIT else backend,
        usage=usage,
        tokens_saved=saved,
    )


def ledger_on(store: LedgerStore, clock: ManualClock, writer: str = "i1", flush_seconds: float = 3600) -> Ledger:
    return Ledger(store, clock, writer=writer, prices=PRICES, deployments=DEPLOYMENTS, flush_seconds=flush_seconds)


def totals(rows: list[UsageRow]) -> tuple[int, int, int, int, float]:
    return (
        sum(r.counts.prompt_tokens for r in rows),
        sum(r.counts.completion_tokens for r in rows),
        sum(r.counts.cached_tokens for r in rows),
        sum(sum(r.counts.requests.values()) for r in rows),
        round(sum(r.counts.cost for r in rows), 9),
    )


async def all_rows(store: LedgerStore, clock: ManualClock) -> list[UsageRow]:
    now = hour_of(clock.now())
    return await store.rows(now - 48 * HOUR, now + 48 * HOUR)


# --- the two stores, one contract ---------------------------------------------------------------


@pytest.fixture(params=["embedded", pytest.param("tables", marks=pytest.mark.azurite)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LedgerStore]:
    if request.param == "embedded":
        yield EmbeddedLedgerStore()
        return
    from shared.stores.tables.account import TableAccount
    from shared.stores.tables.ledger import TableLedgerStore

    azurite: Azurite = request.getfixturevalue("azurite")
    account = TableAccount(StorageConfig(connection_string=azurite.connection_string), prefix=unique_prefix())
    try:
        yield TableLedgerStore(account)
    finally:
        await account.close()


def batch(writer: str, sequence: int, *rows: tuple[UsageKey, UsageCounts]) -> UsageBatch:
    return UsageBatch(writer, sequence, dict(rows))


HOUR0 = 1_800_000_000 // HOUR * HOUR
KEY_A = UsageKey("sub-alice", HOUR0, "gpt-4o-mini", "east")
KEY_B = UsageKey("sub-bob", HOUR0, "gpt-4o-mini", "west")
ONE = UsageCounts(10, 5, 0, {"success": 1}, 0.0045, "alice")


async def test_a_batch_applied_twice_counts_once(store: LedgerStore) -> None:
    first = batch("i1", 1, (KEY_A, ONE), (KEY_B, ONE))
    await store.apply(first)
    await store.apply(first)  # the retry after a reply that never came
    await store.apply(batch("i1", 2, (KEY_A, ONE)))
    await store.apply(batch("i1", 2, (KEY_A, ONE)))
    rows = {r.key: r for r in await store.rows(HOUR0, HOUR0 + HOUR)}
    assert rows[KEY_A].counts.prompt_tokens == 20
    assert rows[KEY_A].counts.requests == {"success": 2}
    assert rows[KEY_A].applied == {"i1": 2}
    assert rows[KEY_B].counts.completion_tokens == 5


async def test_writers_are_counted_apart(store: LedgerStore) -> None:
    await store.apply(batch("i1", 1, (KEY_A, ONE)))
    await store.apply(batch("i2", 1, (KEY_A, ONE)))  # same number, another instance: a different batch
    (row,) = await store.rows(HOUR0, HOUR0 + HOUR, "sub-alice")
    assert row.counts.prompt_tokens == 20
    assert row.applied == {"i1": 1, "i2": 1}
    assert row.counts.cost == pytest.approx(0.009)


async def test_rows_are_selected_by_hour_and_subscription(store: LedgerStore) -> None:
    later = UsageKey("sub-alice", HOUR0 + 5 * HOUR, "", "")
    await store.apply(batch("i1", 1, (KEY_A, ONE), (KEY_B, ONE), (later, ONE)))
    assert {r.key for r in await store.rows(HOUR0, HOUR0 + HOUR)} == {KEY_A, KEY_B}
    assert {r.key for r in await store.rows(HOUR0, HOUR0 + 6 * HOUR, "sub-alice")} == {KEY_A, later}
    assert await store.rows(HOUR0 + HOUR, HOUR0 + 5 * HOUR) == []
    assert await store.rows(HOUR0, HOUR0 + HOUR, "sub-nobody") == []


async def test_concurrent_writers_add_up_exactly(store: LedgerStore) -> None:
    writers = [f"i{n}" for n in range(6)]

    async def write(writer: str) -> None:
        for sequence in range(1, 6):
            await store.apply(batch(writer, sequence, (KEY_A, ONE), (KEY_B, ONE)))

    await asyncio.gather(*(write(w) for w in writers))
    rows = {r.key: r for r in await store.rows(HOUR0, HOUR0 + HOUR)}
    assert rows[KEY_A].counts.requests == {"success": 30}
    assert rows[KEY_B].counts.prompt_tokens == 300
    assert rows[KEY_A].applied == dict.fromkeys(writers, 5)


# --- the ledger over a store --------------------------------------------------------------------


async def test_requests_add_up_per_subscription_deployment_backend_and_hour() -> None:
    clock, store = ManualClock(), EmbeddedLedgerStore()
    ledger = ledger_on(store, clock)
    ledger.add(record(prompt=1000, completion=2000))
    ledger.add(record(prompt=10, completion=0, backend="west"))
    ledger.add(record(BOB, prompt=3, completion=4))
    ledger.add(record(outcome=Outcome.CACHE_HIT, saved=42))
    ledger.add(record(outcome=Outcome.THROTTLED))
    ledger.add(record(None))  # no subscription: nothing to charge it to
    clock.advance(HOUR)
    ledger.add(record(prompt=1, completion=1))
    await ledger.close()
    rows = {
        (r.key.subscription_id, r.key.hour - hour_of(clock.now()), r.key.backend): r.counts
        for r in await all_rows(store, clock)
    }
    east = rows[("sub-alice", -HOUR, "east")]
    assert (east.prompt_tokens, east.completion_tokens) == (1000, 2000)
    assert east.requests == {"success": 1, "throttled": 1}
    assert east.cost == pytest.approx(1000 * 0.15 / 1000 + 2000 * 0.6 / 1000)
    assert rows[("sub-alice", -HOUR, "cache")].cached_tokens == 42
    assert rows[("sub-alice", -HOUR, "cache")].requests == {"cache_hit": 1}
    assert rows[("sub-alice", -HOUR, "cache")].cost == 0
    assert rows[("sub-bob", -HOUR, "east")].subscription_name == "bob"
    assert rows[("sub-alice", 0, "east")].prompt_tokens == 1


def test_price_is_per_thousand_tokens_and_zero_for_unknown_deployments() -> None:
    assert price(PRICES, "gpt-4o-mini", 2000, 1000) == pytest.approx(0.3 + 0.6)
    assert price(PRICES, "other", 2000, 1000) == 0.0


async def test_unknown_deployment_names_do_not_become_rows() -> None:
    clock, store = ManualClock(), EmbeddedLedgerStore()
    ledger = ledger_on(store, clock)
    ledger.add(record(deployment="../../etc/passwd"))
    await ledger.close()
    (row,) = await all_rows(store, clock)
    assert row.key.deployment == ""


async def test_nothing_is_written_until_a_flush_and_a_flush_writes_one_batch() -> None:
    clock = ManualClock()
    writes: list[UsageBatch] = []

    class Recording(EmbeddedLedgerStore):
        async def apply(self, batch: UsageBatch) -> None:
            writes.append(batch)
            await super().apply(batch)

    ledger = ledger_on(Recording(), clock)
    for _ in range(100):
        ledger.add(record())
    assert writes == []
    await ledger.flush()
    assert [(b.sequence, len(b.rows)) for b in writes] == [(1, 1)]
    await ledger.flush()  # nothing new: nothing written
    assert len(writes) == 1
    await ledger.close()


class LostReplies(EmbeddedLedgerStore):
    """Applies every batch, then fails the first `failures` calls as a timeout would: the writer cannot know."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def apply(self, batch: UsageBatch) -> None:
        self.calls += 1
        await super().apply(batch)
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("timed out")


async def test_a_batch_whose_reply_was_lost_is_retried_without_counting_twice() -> None:
    clock, store = ManualClock(), LostReplies(failures=2)
    ledger = ledger_on(store, clock)
    ledger.add(record(prompt=7, completion=3))
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await ledger.flush()
        ledger.add(record(prompt=7, completion=3))  # meanwhile more requests: they wait for the next batch
    await ledger.flush()
    assert store.calls == 4  # batch 1 three times, then batch 2 with the two later requests
    assert totals(await all_rows(store, clock))[:2] == (21, 9)
    await ledger.close()


async def test_the_timer_flushes_in_the_background_and_survives_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    clock, store = ManualClock(), LostReplies(failures=1)
    ledger = ledger_on(store, clock, flush_seconds=0.02)
    ledger.add(record())
    with caplog.at_level(logging.WARNING, logger="gateway.ledger"):
        for _ in range(100):
            if store.calls >= 2:
                break
            await asyncio.sleep(0.01)
    assert "not written" in caplog.text
    assert "written again" in caplog.text
    assert totals(await all_rows(store, clock))[3] == 1
    await ledger.close()


async def test_close_writes_what_is_left_and_reports_what_it_could_not(caplog: pytest.LogCaptureFixture) -> None:
    class Down(EmbeddedLedgerStore):
        async def apply(self, batch: UsageBatch) -> None:
            raise StoreUnavailable("down")

    ledger = ledger_on(Down(), ManualClock())
    ledger.add(record(prompt=11, completion=22))
    with caplog.at_level(logging.ERROR, logger="gateway.ledger"):
        await ledger.close()
    assert "1 requests (11 prompt, 22 completion tokens) could not be written" in caplog.text


async def test_reads_include_this_instances_unwritten_counts_exactly_once() -> None:
    clock = ManualClock()
    gate = asyncio.Event()

    class Slow(EmbeddedLedgerStore):
        async def apply(self, batch: UsageBatch) -> None:
            await super().apply(batch)  # stored...
            await gate.wait()  # ...but the reply is late

    store = Slow()
    ledger = ledger_on(store, clock)
    ledger.add(record(prompt=100, completion=1))
    assert totals(await ledger.rows(hour_of(clock.now()), hour_of(clock.now()) + HOUR))[0] == 100
    flushing = asyncio.create_task(ledger.flush())
    await asyncio.sleep(0)
    ledger.add(record(prompt=1, completion=1))  # open again while the batch is in flight
    view = await ledger.rows(hour_of(clock.now()), hour_of(clock.now()) + HOUR, "sub-alice")
    assert totals(view)[:2] == (101, 2)
    gate.set()
    await flushing
    await ledger.close()
    assert totals(await all_rows(store, clock))[:2] == (101, 2)


async def test_a_restarted_instance_adds_to_what_the_last_one_wrote(store: LedgerStore) -> None:
    clock = ManualClock()
    first = ledger_on(store, clock, writer="host-1-aaa")
    for _ in range(3):
        first.add(record(prompt=10, completion=1))
    await first.close()
    second = ledger_on(store, clock, writer="host-1-bbb")  # same host, new process: a new writer
    second.add(record(prompt=10, completion=1))
    await second.close()
    assert totals(await all_rows(store, clock))[:4] == (40, 4, 0, 4)


# --- end to end: the simulator's usage, the ledger's totals ---------------------------------------


def _usage_of(body: bytes, streamed: bool) -> tuple[int, int]:
    if not streamed:
        usage = json.loads(body)["usage"]
        return int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    for line in body.decode().splitlines():
        if line.startswith("data: {") and '"usage":{' in line.replace(" ", ""):
            usage = json.loads(line[6:]).get("usage")
            if usage:
                return int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    raise AssertionError("no usage chunk in the stream")


async def drive(url: str, key: str, n: int, concurrency: int) -> tuple[int, int, int]:
    """n chat calls (every third streamed, asking for the usage chunk): the usage the simulator reported."""
    prompt = completion = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, session: aiohttp.ClientSession) -> tuple[int, int]:
        streamed = i % 3 == 0
        body: dict[str, Any] = {"messages": [{"role": "user", "content": f"Say hi {i}"}], "max_tokens": 3 + i % 7}
        if streamed:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        async with (
            sem,
            session.post(
                f"{url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
                json=body,
                headers={"api-key": key},
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return _usage_of(await resp.read(), streamed)

    async with aiohttp.ClientSession() as session:
        for p, c in await asyncio.gather(*(one(i, session) for i in range(n))):
            prompt, completion = prompt + p, completion + c
    return prompt, completion, n


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    config = SimulatorConfig(name="ledger-sim", deployments=("gpt-4o-mini",), api_key="sim-key")
    with SimulatorThread(config) as running:
        yield running


async def test_the_ledger_holds_exactly_the_usage_the_simulator_reported_under_concurrent_load(
    gateway_server: Callable[..., GatewayServer], sim: SimulatorThread
) -> None:
    observed = observe(gateway_server, [backend("sim", sim)], GATEWAY_LEDGER_FLUSH_SECONDS="0.1", **PRICED)
    store = observed.gateway.ledger.store
    prompt, completion, n = await drive(observed.server.url, ALICE_KEY, 60, concurrency=12)
    observed.server.stop()  # the host's shutdown closes the gateway: the last flush
    rows = await store.rows(0, 4_000_000_000)
    assert totals(rows)[:4] == (prompt, completion, 0, n)
    assert {r.key.deployment for r in rows} == {"gpt-4o-mini"}
    assert sum(r.counts.cost for r in rows) == pytest.approx((prompt * 0.15 + completion * 0.6) / 1000)


@pytest.mark.azurite
async def test_table_storage_ledger_adds_up_across_instances_and_a_restart(
    gateway_server: Callable[..., GatewayServer], sim: SimulatorThread, azurite: Azurite
) -> None:
    env = {
        "GATEWAY_STORAGE": azurite.connection_string,
        "GATEWAY_TABLE_PREFIX": unique_prefix(),
        "GATEWAY_LEDGER_FLUSH_SECONDS": "0.1",
        **PRICED,
    }
    first = observe(gateway_server, [backend("sim", sim)], instance_id="host-a", **env)
    second = observe(gateway_server, [backend("sim", sim)], instance_id="host-b", **env)
    reported = await asyncio.gather(
        drive(first.server.url, ALICE_KEY, 30, concurrency=8),
        drive(second.server.url, ALICE_KEY, 30, concurrency=8),
        drive(second.server.url, BOB_KEY, 10, concurrency=4),
    )
    # Each closes in its own loop first: the host's shutdown closes every gateway of the process (see below).
    for instance in (first, second):
        instance.server.run(instance.gateway.close())
    for instance in (first, second):
        instance.server.stop()
    restarted = observe(gateway_server, [backend("sim", sim)], instance_id="host-a-restarted", **env)
    reported.append(await drive(restarted.server.url, ALICE_KEY, 20, concurrency=8))
    restarted.server.stop()

    from shared.stores.tables.account import TableAccount
    from shared.stores.tables.ledger import TableLedgerStore

    account = TableAccount(
        StorageConfig(connection_string=azurite.connection_string), prefix=env["GATEWAY_TABLE_PREFIX"]
    )
    try:
        rows = await TableLedgerStore(account).rows(0, 4_000_000_000)
    finally:
        await account.close()
    prompt, completion, n = (sum(r[i] for r in reported) for i in range(3))
    assert totals(rows)[:4] == (prompt, completion, 0, n)
    by_subscription = {r.counts.subscription_name: sum(r.counts.requests.values()) for r in rows}
    assert by_subscription == {"alice": 80, "bob": 10}
    writers = set().union(*(r.applied for r in rows))
    assert writers == {"host-a", "host-b", "host-a-restarted"}


# function_app served as the Functions worker runs it: nothing on SIGTERM (it ends the process) and no
# shutdown hook. The local host, unlike it, shuts down gracefully and would flush the ledger by itself.
LIKE_THE_FUNCTIONS_WORKER = """
import asyncio, contextlib, sys, uvicorn
from local.host import LocalHost

class Worker(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield

config = uvicorn.Config(LocalHost(run_timers=False), host="127.0.0.1", port=int(sys.argv[1]), lifespan="off",
                        log_config=None, access_log=False)
asyncio.run(Worker(config).serve())
"""


@pytest.mark.azurite
async def test_in_azure_sigterm_writes_the_ledger_before_the_worker_ends(
    sim: SimulatorThread, azurite: Azurite, tmp_path: Path
) -> None:
    """The Functions host ends the Python worker with SIGTERM: the counts of the last requests must reach storage."""
    prefix, port = unique_prefix(), free_port()
    env = {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps([backend("sim", sim)]),
        "SIM_KEY": "sim-key",
        "GATEWAY_STORAGE": azurite.connection_string,
        "GATEWAY_TABLE_PREFIX": prefix,
        "GATEWAY_DEMO_KEY": ALICE_KEY,
        "GATEWAY_LEDGER_FLUSH_SECONDS": "3600",  # nothing written before the signal
        "GATEWAY_PROBE_SCHEDULE": "0 0 0 1 1 *",
        "WEBSITE_SITE_NAME": "gateway-under-test",  # what makes the gateway think it runs in Azure
    }
    with (tmp_path / "host.log").open("wb") as log:
        host = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-c", LIKE_THE_FUNCTIONS_WORKER, str(port)),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            try:
                await asyncio.to_thread(wait_for_port, port, timeout=15, exit_code=lambda: host.returncode, name="host")
            except NotListening as exc:
                raise AssertionError((tmp_path / "host.log").read_text()) from exc
            prompt, completion, n = await drive(f"http://127.0.0.1:{port}", ALICE_KEY, 6, concurrency=3)
            host.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(host.wait(), 20)
        finally:
            if host.returncode is None:
                host.kill()
    assert code == -signal.SIGTERM, (tmp_path / "host.log").read_text()  # it still ends as SIGTERM ends it
    from shared.stores.tables.account import TableAccount
    from shared.stores.tables.ledger import TableLedgerStore

    account = TableAccount(StorageConfig(connection_string=azurite.connection_string), prefix=prefix)
    try:
        rows = await TableLedgerStore(account).rows(0, 4_000_000_000)
    finally:
        await account.close()
    assert totals(rows)[:4] == (prompt, completion, 0, n)
