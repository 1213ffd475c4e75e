"""The breaker state machine (pure, injected time) and the board that shares it through a store."""

from __future__ import annotations

import json

import pytest

from shared.backendconfig import BreakerPolicy
from shared.breaker import (
    BreakerBoard,
    BreakerState,
    Status,
    available,
    bucket_of,
    claim_trial,
    force_open,
    record_failure,
    record_success,
    window_totals,
)
from shared.clock import ManualClock
from shared.errors import StoreUnavailable
from shared.stores.embedded import EmbeddedBreakerStore

POLICY = BreakerPolicy(mode="count", failures=3, interval_seconds=10, trip_seconds=30, trial_timeout_seconds=5)


def test_closed_breaker_trips_after_n_failures_within_the_interval() -> None:
    state = BreakerState()
    for t in (0.0, 1.0):
        state = record_failure(POLICY, state, t, retry_after=None, reason="500")
        assert state.status is Status.CLOSED
    state = record_failure(POLICY, state, 2.0, retry_after=None, reason="500")
    assert state.status is Status.OPEN
    assert state.open_until == 32.0
    assert state.trips == 1


def test_failures_older_than_the_interval_do_not_count() -> None:
    state = BreakerState()
    for t in (0.0, 5.0, 11.0, 16.0):
        state = record_failure(POLICY, state, t, retry_after=None, reason="500")
    assert state.status is Status.CLOSED  # never three within ten seconds


def test_open_holds_for_retry_after_when_longer_than_trip() -> None:
    state = BreakerState(failures=(0.0, 1.0))
    state = record_failure(POLICY, state, 2.0, retry_after=120.0, reason="429")
    assert state.open_until == 122.0


def test_retry_after_ignored_when_policy_says_so() -> None:
    policy = BreakerPolicy(mode="count", failures=1, trip_seconds=30, accept_retry_after=False)
    state = record_failure(policy, BreakerState(), 0.0, retry_after=120.0, reason="429")
    assert state.open_until == 30.0


def test_open_breaker_allows_nothing_until_trip_time_then_one_trial() -> None:
    state = BreakerState(Status.OPEN, open_until=30.0)
    assert not available(state, 29.0, "a")
    assert claim_trial(POLICY, state, 29.0, "a") is None
    trial = claim_trial(POLICY, state, 30.0, "a")
    assert trial is not None
    assert trial.status is Status.HALF_OPEN
    assert available(trial, 30.5, "a")
    assert not available(trial, 30.5, "b")  # one trial only, held by "a"
    assert claim_trial(POLICY, trial, 31.0, "b") is None


def test_unreported_trial_is_released_after_its_lease() -> None:
    trial = BreakerState(Status.HALF_OPEN, trial_owner="a", trial_until=35.0)
    taken = claim_trial(POLICY, trial, 35.0, "b")
    assert taken is not None
    assert taken.trial_owner == "b"


def test_trial_success_closes_and_failure_reopens() -> None:
    trial = BreakerState(Status.HALF_OPEN, trial_owner="a", trial_until=35.0, trips=1)
    assert record_success(trial).status is Status.CLOSED
    reopened = record_failure(POLICY, trial, 31.0, retry_after=None, reason="500")
    assert reopened.status is Status.OPEN
    assert reopened.open_until == 61.0
    assert reopened.trips == 2


def test_force_open_from_probe() -> None:
    state = force_open(POLICY, BreakerState(), 10.0, "probe: timeout")
    assert state.status is Status.OPEN
    assert state.open_until == 40.0


def test_record_round_trip() -> None:
    state = BreakerState(Status.HALF_OPEN, (1.0, 2.0), 3.0, "x", 4.0, 5, "why")
    assert BreakerState.from_record(state.to_record()) == state


async def test_board_shares_a_trip_between_instances_through_the_store() -> None:
    clock = ManualClock(1000.0)
    store = EmbeddedBreakerStore()
    a = BreakerBoard(POLICY, store, clock, "a", sync_seconds=2)
    b = BreakerBoard(POLICY, store, clock, "b", sync_seconds=2)
    key = BreakerBoard.key("be1", "chat")
    assert await b.allow(key)
    for _ in range(3):
        await a.failure(key, retry_after=None, reason="500")
    assert not await a.allow(key)
    clock.advance(2.1)  # b refreshes within its sync interval
    await b.sync()
    assert not await b.allow(key)


async def test_board_gives_the_half_open_trial_to_one_instance_only() -> None:
    clock = ManualClock(1000.0)
    store = EmbeddedBreakerStore()
    a = BreakerBoard(POLICY, store, clock, "a")
    b = BreakerBoard(POLICY, store, clock, "b")
    key = BreakerBoard.key("be1", "chat")
    for _ in range(3):
        await a.failure(key, retry_after=None, reason="500")
    await b.sync()
    clock.advance(31)
    results = [await a.allow(key), await b.allow(key), await a.allow(key)]
    assert results == [True, False, False]  # one trial request, from a, until it is reported
    await a.success(key)
    await b.sync()
    assert await b.allow(key)


class _BrokenStore(EmbeddedBreakerStore):
    async def load(self, key: str):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("down")

    async def load_all(self):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("down")


async def test_an_unreported_trial_is_offered_again_after_its_lease() -> None:
    clock = ManualClock(1000.0)
    board = BreakerBoard(POLICY, EmbeddedBreakerStore(), clock, "a")
    key = BreakerBoard.key("be1", "chat")
    for _ in range(3):
        await board.failure(key, retry_after=None, reason="500")
    clock.advance(31)
    assert await board.allow(key)
    assert not await board.allow(key)
    clock.advance(POLICY.trial_timeout_seconds)
    assert await board.allow(key)


async def test_board_falls_back_to_local_state_when_the_store_is_down() -> None:
    clock = ManualClock(1000.0)
    board = BreakerBoard(POLICY, _BrokenStore(), clock, "a")
    key = BreakerBoard.key("be1", "chat")
    for _ in range(3):
        await board.failure(key, retry_after=None, reason="500")
    assert not board.store_healthy
    assert not await board.allow(key)
    clock.advance(31)
    assert await board.allow(key)


@pytest.mark.parametrize(("status", "counted"), [(500, True), (503, True), (429, False), (400, False)])
def test_policy_counts_configured_status_ranges(status: int, counted: bool) -> None:
    assert BreakerPolicy().counts(status) is counted


# --- the rate rule --------------------------------------------------------------------------------

RATE = BreakerPolicy(failure_rate=0.5, min_requests=10, window_seconds=10, trip_seconds=30)


def _outcomes(state: BreakerState, now: float, *, ok: int, failed: int) -> BreakerState:
    """`ok` successes (tallied as an instance would) then `failed` failures, all at `now`."""
    counts = ((bucket_of(RATE, now), ok, 0),) if ok else ()
    for _ in range(failed):
        state = record_failure(RATE, state, now, retry_after=None, reason="500", counts=counts)
        counts = ()
    return state


def test_rate_rule_does_not_trip_below_the_minimum_number_of_requests() -> None:
    state = _outcomes(BreakerState(), 0.0, ok=0, failed=9)  # 9 of 9 failed, but fewer than 10 requests
    assert state.status is Status.CLOSED


def test_rate_rule_trips_at_the_failure_rate_once_there_are_enough_requests() -> None:
    state = _outcomes(BreakerState(), 0.0, ok=0, failed=10)
    assert state.status is Status.OPEN
    assert state.open_until == 30.0
    assert "10 of 10" in state.reason


def test_rate_rule_ignores_failures_that_are_a_small_share_of_a_busy_pool() -> None:
    # Five failures in ten seconds open a count breaker at any volume; at 5 of 100 the rate rule stays closed.
    count_rule = BreakerPolicy(mode="count", failures=5, interval_seconds=10)
    counted = BreakerState()
    for t in range(5):
        counted = record_failure(count_rule, counted, float(t), retry_after=None, reason="500")
    assert counted.status is Status.OPEN
    assert _outcomes(BreakerState(), 0.0, ok=95, failed=5).status is Status.CLOSED


def test_rate_rule_trips_when_half_of_the_requests_fail() -> None:
    state = _outcomes(BreakerState(), 0.0, ok=10, failed=9)
    assert state.status is Status.CLOSED  # 9 of 19
    state = _outcomes(state, 0.5, ok=0, failed=1)
    assert state.status is Status.OPEN  # 10 of 20


def test_rate_window_slides_and_old_requests_drop_out() -> None:
    state = _outcomes(BreakerState(), 0.0, ok=100, failed=9)
    assert state.status is Status.CLOSED
    # Eleven seconds later the hundred successes have left the window; the old failures too.
    state = _outcomes(state, 11.0, ok=0, failed=9)
    assert state.status is Status.CLOSED
    assert window_totals(RATE, state.window, 11.0) == (9, 9)
    state = _outcomes(state, 12.0, ok=0, failed=1)
    assert state.status is Status.OPEN


def test_rate_window_is_a_few_buckets_whatever_the_traffic() -> None:
    state = BreakerState()
    for i in range(1000):
        state = _outcomes(state, i * 0.05, ok=3, failed=1)
    assert len(state.window) <= 10
    assert len(json.dumps(state.to_record())) < 1000


def test_rate_record_round_trip_keeps_the_window() -> None:
    state = _outcomes(BreakerState(), 0.0, ok=4, failed=3)
    assert BreakerState.from_record(json.loads(json.dumps(state.to_record()))) == state


async def test_board_counts_this_instances_successes_with_its_next_failure() -> None:
    clock = ManualClock(1000.0)
    store = EmbeddedBreakerStore()
    board = BreakerBoard(RATE, store, clock, "a")
    key = BreakerBoard.key("be1", "chat")
    for _ in range(30):
        await board.success(key)
    assert (await store.load(key)).value is None  # successes alone write nothing
    for _ in range(10):
        await board.failure(key, retry_after=None, reason="500")
    assert board.state(key).status is Status.CLOSED  # 10 of 40
    assert window_totals(RATE, board.state(key).window, clock.now()) == (40, 10)
    for _ in range(20):
        await board.failure(key, retry_after=None, reason="500")
    assert board.state(key).status is Status.OPEN  # 30 of 60


async def test_board_shares_every_instances_successes_once_the_window_holds_failures() -> None:
    clock = ManualClock(1000.0)
    store = EmbeddedBreakerStore()
    a = BreakerBoard(RATE, store, clock, "a")
    b = BreakerBoard(RATE, store, clock, "b")
    key = BreakerBoard.key("be1", "chat")
    for _ in range(20):
        await b.success(key)  # b sees only successes
    for _ in range(6):
        await a.failure(key, retry_after=None, reason="500")  # a sees only failures: 6 of 6 here
    await b.sync()  # b finds failures in the shared window and adds its successes
    for _ in range(4):
        await a.failure(key, retry_after=None, reason="500")
    # 10 of 30 across both instances: under the rate; a alone would have tripped at 10 of 10.
    assert a.state(key).status is Status.CLOSED
    assert window_totals(RATE, a.state(key).window, clock.now()) == (30, 10)


async def test_a_reopened_breaker_says_when_it_half_opens() -> None:
    clock = ManualClock(1000.0)
    board = BreakerBoard(RATE, EmbeddedBreakerStore(), clock, "a")
    key = BreakerBoard.key("be1", "chat")
    assert board.reopens_in(key) is None
    for _ in range(10):
        await board.failure(key, retry_after=None, reason="500")
    clock.advance(12)
    assert board.reopens_in(key) == 18.0


def test_the_default_policy_is_the_rate_rule() -> None:
    policy = BreakerPolicy()
    assert (policy.mode, policy.failure_rate, policy.min_requests, policy.window_seconds) == ("rate", 0.5, 20, 30.0)
