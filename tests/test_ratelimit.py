"""Token and request limits: windows, answers, reserve-then-reconcile, leases and their bound, storage outages.

Everything runs on an injected clock and an in-process counter store; the
same limiter against Table Storage, across processes, is proven in
tests/test_multi_instance.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.api import ApiCall
from shared.clock import ManualClock
from shared.errors import QuotaExceeded, RateLimited, ServiceUnavailable, StoreUnavailable
from shared.limits.estimate import Estimate
from shared.limits.lease import Caps, LeaseAsk, decide_lease
from shared.limits.limiter import Admission, SharedLimiter
from shared.limits.windows import quota_window, rate_window
from shared.models import Caller, Limits, Operation, QuotaPeriod
from shared.stores.embedded import EmbeddedCounterStore
from shared.stores.protocols import CounterChange, Counters

START = datetime(2027, 3, 10, 12, 0, 0, tzinfo=UTC).timestamp()  # a Wednesday, on a minute boundary


def call(prompt: int, completion: int = 0) -> ApiCall:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "hi"}],
        "_prompt": prompt,
        "_completion": completion,
    }
    return ApiCall(Operation.CHAT, "gpt", body, "2024-10-21")


def fixed_estimate(c: ApiCall, default: int) -> Estimate:
    return Estimate(int(c.body["_prompt"]), int(c.body["_completion"]))


def caller(sub: str = "sub-1", **limits: Any) -> Caller:
    return Caller(sub, "team", Limits(**limits))


class CountingStore(EmbeddedCounterStore):
    """The embedded store, counting writes and able to fail like storage that went away."""

    def __init__(self) -> None:
        super().__init__()
        self.updates = 0
        self.down = False

    async def update(self, partition: str, row: str, change: CounterChange) -> tuple[Counters, Counters]:
        if self.down:
            raise StoreUnavailable("storage is down")
        self.updates += 1
        return await super().update(partition, row, change)


def limiter(store: EmbeddedCounterStore, clock: ManualClock, **kwargs: Any) -> SharedLimiter:
    return SharedLimiter(store, clock, estimator=fixed_estimate, **kwargs)


# --- windows ----------------------------------------------------------------------------------------


def test_rate_windows_are_aligned_to_the_utc_minute_or_its_divisor() -> None:
    assert rate_window(START + 59.9, 60).start == START
    assert rate_window(START + 60, 60).start == START + 60
    assert rate_window(START + 25, 10).start == START + 20
    assert rate_window(START + 25, 10).end == START + 30


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (QuotaPeriod.HOURLY, datetime(2027, 3, 10, 12, tzinfo=UTC), datetime(2027, 3, 10, 13, tzinfo=UTC)),
        (QuotaPeriod.DAILY, datetime(2027, 3, 10, tzinfo=UTC), datetime(2027, 3, 11, tzinfo=UTC)),
        (QuotaPeriod.WEEKLY, datetime(2027, 3, 8, tzinfo=UTC), datetime(2027, 3, 15, tzinfo=UTC)),  # ISO: Monday
        (QuotaPeriod.MONTHLY, datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)),
    ],
)
def test_quota_periods_are_fixed_utc_windows(period: QuotaPeriod, start: datetime, end: datetime) -> None:
    window = quota_window(START + 1234.5, period)
    assert (window.start, window.end) == (start.timestamp(), end.timestamp())


def test_a_december_month_ends_on_the_first_of_january() -> None:
    window = quota_window(datetime(2027, 12, 31, 23, 59, tzinfo=UTC).timestamp(), QuotaPeriod.MONTHLY)
    assert window.end == datetime(2028, 1, 1, tzinfo=UTC).timestamp()


# --- answers ------------------------------------------------------------------------------------------


async def test_over_the_token_limit_answers_429_with_the_seconds_until_the_window_ends() -> None:
    clock = ManualClock(START + 15.5)
    lim = limiter(EmbeddedCounterStore(), clock)
    who = caller(tokens_per_minute=1000)
    admitted = [await lim.admit(who, call(100, 100)) for _ in range(5)]
    assert sum(a.reserved_tokens for a in admitted) == 1000
    with pytest.raises(RateLimited) as refused:
        await lim.admit(who, call(100, 100))
    error = refused.value
    assert error.status == 429
    assert error.envelope()["error"]["type"] == "rate_limit_error"
    assert error.headers["Retry-After"] == "45"
    assert error.headers["retry-after-ms"] == "44500"
    assert error.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "1000 tokens per minute" in error.message


async def test_over_the_request_limit_says_so() -> None:
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    who = caller(requests_per_minute=3)
    for _ in range(3):
        await lim.admit(who, call(1))
    with pytest.raises(RateLimited) as refused:
        await lim.admit(who, call(1))
    assert "3 requests per minute" in refused.value.message
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"


async def test_over_the_quota_answers_403_with_the_reset_time() -> None:
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    who = caller(token_quota=500, token_quota_period=QuotaPeriod.DAILY)
    await lim.admit(who, call(400))
    with pytest.raises(QuotaExceeded) as refused:
        await lim.admit(who, call(200))
    assert refused.value.status == 403
    assert "resets at 2027-03-11T00:00:00Z" in refused.value.message
    assert refused.value.headers["x-ratelimit-reset-quota"] == "2027-03-11T00:00:00Z"
    assert refused.value.envelope()["error"]["code"] == "quota_exceeded"


async def test_a_request_larger_than_the_whole_limit_is_refused_without_a_retry_after() -> None:
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    with pytest.raises(RateLimited) as refused:
        await lim.admit(caller(tokens_per_minute=1000), call(900, 200))
    assert "Request too large" in refused.value.message
    assert "Retry-After" not in refused.value.headers


async def test_every_admission_carries_the_rate_limit_headers() -> None:
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    who = caller(
        tokens_per_minute=1000, requests_per_minute=10, token_quota=5000, token_quota_period=QuotaPeriod.HOURLY
    )
    first = await lim.admit(who, call(100))
    second = await lim.admit(who, call(50))
    assert first.headers == {
        "x-ratelimit-reset-tokens": "60.000s",
        "x-ratelimit-reset-requests": "60.000s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-limit-quota-tokens": "5000",
        "x-ratelimit-remaining-quota-tokens": "4900",
        "x-ratelimit-reset-quota": "2027-03-10T13:00:00Z",
    }
    assert second.headers["x-ratelimit-remaining-tokens"] == "850"
    assert second.headers["x-ratelimit-remaining-requests"] == "8"


async def test_a_subscription_without_limits_reserves_nothing_and_costs_no_storage() -> None:
    store = CountingStore()
    lim = limiter(store, ManualClock(START))
    admission = await lim.admit(caller(), call(100, 100))
    assert admission.reserved_tokens == 0
    assert admission.headers == {}
    await lim.settle(admission, 150)
    assert store.updates == 0


# --- reserve, then reconcile ---------------------------------------------------------------------------


async def test_settling_below_the_reservation_gives_the_difference_back() -> None:
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    who = caller(tokens_per_minute=1000)
    admissions = [await lim.admit(who, call(100, 150)) for _ in range(4)]
    with pytest.raises(RateLimited):
        await lim.admit(who, call(100, 150))
    for admission in admissions:
        await lim.settle(admission, 120)  # 130 of each 250 come back
    more = [await lim.admit(who, call(100, 150)) for _ in range(2)]
    assert len(more) == 2


async def test_settle_counts_once() -> None:
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    who = caller(tokens_per_minute=1000)
    admission = await lim.admit(who, call(500, 500))
    await lim.settle(admission, 0)
    await lim.settle(admission, 0)  # a second settle (meter and stream end both) must not refund twice
    assert admission.settled
    await lim.admit(who, call(500, 500))
    with pytest.raises(RateLimited):
        await lim.admit(who, call(1))


async def test_the_admission_carries_the_prompt_estimate() -> None:
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    admission = await lim.admit(caller(tokens_per_minute=1000), call(123, 77))
    assert (admission.prompt_estimate, admission.reserved_tokens) == (123, 200)
    streamed = await lim.admit(caller(), ApiCall(Operation.CHAT, "gpt", {**call(40).body, "stream": True}, "v"))
    assert streamed.prompt_estimate == 40  # needed to charge a cut stream even without limits


async def test_usage_beyond_the_reservation_is_charged_and_reaches_the_other_instances() -> None:
    clock = ManualClock(START)
    store = EmbeddedCounterStore()
    a, b = limiter(store, clock), limiter(store, clock)
    who = caller(tokens_per_minute=1000)
    await a.settle(await a.admit(who, call(100)), 900)  # the estimate was far too low
    clock.advance(15)
    await a.give_back_idle()  # a settles up with the record when it goes quiet (or at its next lease)
    taken = 0
    while True:
        try:
            taken += (await b.admit(who, call(10))).reserved_tokens
        except RateLimited:
            break
    assert taken == 100  # b gets only what a's real use left


async def test_a_refund_for_a_window_that_has_closed_is_dropped() -> None:
    clock = ManualClock(START)
    lim = limiter(EmbeddedCounterStore(), clock)
    who = caller(tokens_per_minute=1000)
    admission = await lim.admit(who, call(600))
    clock.advance(60)
    await lim.settle(admission, 0)
    admitted = [await lim.admit(who, call(500)) for _ in range(2)]  # the new window has its own 1000, no more
    assert len(admitted) == 2
    with pytest.raises(RateLimited):
        await lim.admit(who, call(1))


async def test_capacity_returns_when_the_window_rolls_over() -> None:
    clock = ManualClock(START)
    lim = limiter(EmbeddedCounterStore(), clock)
    who = caller(tokens_per_minute=100)
    await lim.admit(who, call(100))
    with pytest.raises(RateLimited):
        await lim.admit(who, call(1))
    clock.advance(60)
    await lim.admit(who, call(100))


async def test_a_shorter_window_scales_the_limit() -> None:
    clock = ManualClock(START)
    lim = limiter(EmbeddedCounterStore(), clock, window_seconds=10)
    who = caller(tokens_per_minute=600)
    await lim.admit(who, call(100))
    with pytest.raises(RateLimited) as refused:
        await lim.admit(who, call(1))
    assert refused.value.headers["Retry-After"] == "10"
    clock.advance(10)
    await lim.admit(who, call(100))


async def test_a_limit_changed_mid_window_applies_at_once() -> None:
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    await lim.admit(caller(tokens_per_minute=1000), call(600))
    with pytest.raises(RateLimited):
        await lim.admit(caller(tokens_per_minute=500), call(100))
    await lim.admit(caller(tokens_per_minute=2000), call(1000))


async def test_a_limit_lowered_mid_window_stops_the_lease_already_held() -> None:
    """The lease taken under the old limit is not spent past the new one (found by an independent check)."""
    lim = limiter(EmbeddedCounterStore(), ManualClock(START))
    await lim.admit(caller(requests_per_minute=1000), call(1))  # takes a lease sized for 1,000 a minute
    admitted = 0
    for _ in range(20):
        try:
            await lim.admit(caller(requests_per_minute=2), call(1))
        except RateLimited:
            continue
        admitted += 1
    assert admitted == 1  # one was already used in this window: one more fits under 2
    await lim.admit(caller(tokens_per_minute=5000), call(10))  # a token lease of its own
    await lim.admit(caller(tokens_per_minute=25), call(10))  # 20 of 25
    with pytest.raises(RateLimited):
        await lim.admit(caller(tokens_per_minute=25), call(10))  # 30 would pass 25


# --- leases: cost and the bound ---------------------------------------------------------------------------


async def test_steady_traffic_needs_far_fewer_storage_writes_than_requests() -> None:
    clock = ManualClock(START)
    store = CountingStore()
    lim = limiter(store, clock)
    who = caller(tokens_per_minute=100_000, requests_per_minute=2000)
    requests = 0
    for _ in range(3 * 60 * 10):  # three minutes at 10 requests per second, half the limit
        admission = await lim.admit(who, call(40, 40))
        await lim.settle(admission, 80)
        requests += 1
        clock.advance(0.1)
    assert store.updates / requests < 0.02


async def test_refused_requests_cost_no_storage_once_the_window_is_known_full() -> None:
    clock = ManualClock(START)
    store = CountingStore()
    lim = limiter(store, clock)
    who = caller(tokens_per_minute=1000)
    await lim.admit(who, call(1000))
    writes = store.updates
    for _ in range(100):
        with pytest.raises(RateLimited):
            await lim.admit(who, call(10))
    assert store.updates - writes <= 1


@pytest.mark.parametrize("instances", [1, 3, 8])
async def test_instances_sharing_a_window_admit_within_the_bound(instances: int) -> None:
    """Round-robin overload on N instances: each window admits at most its cap, and misses less than N requests."""
    clock = ManualClock(START)
    store = CountingStore()
    limiters = [limiter(store, clock) for _ in range(instances)]
    cap, size = 60_000, 150
    who = caller(tokens_per_minute=cap)
    per_window: dict[int, int] = {}
    inflight: list[tuple[SharedLimiter, Admission]] = []
    requests = 0
    for step in range(3 * 60 * 20):  # three minutes in 50 ms steps, more than the limit offered
        for i in range(instances):
            try:
                admission = await limiters[(step + i) % instances].admit(who, call(size // 2, size - size // 2))
            except RateLimited:
                continue
            requests += 1
            window = int(clock.now() // 60)
            per_window[window] = per_window.get(window, 0) + admission.reserved_tokens
            inflight.append((limiters[(step + i) % instances], admission))
        for lim, admission in inflight:
            await lim.settle(admission, admission.reserved_tokens)
        inflight.clear()
        clock.advance(0.05)
    for window, admitted in per_window.items():
        assert admitted <= cap, window
        assert admitted > cap - instances * size, window
    print(f"{instances} instances: {store.updates / requests:.3f} writes per request")
    assert store.updates / requests < 0.25


async def test_a_lease_left_idle_goes_back_to_the_other_instances() -> None:
    clock = ManualClock(START)
    store = EmbeddedCounterStore()
    a, b = limiter(store, clock), limiter(store, clock)
    who = caller(tokens_per_minute=1000)
    await a.admit(who, call(10))  # a leases a share of the window and then goes quiet
    taken = 0
    while True:
        try:
            taken += (await b.admit(who, call(10))).reserved_tokens
        except RateLimited:
            break
    assert taken < 990
    clock.advance(16)
    assert await a.give_back_idle() == 1
    clock.advance(15)  # b looks at the record again after a quarter of the window
    while True:
        try:
            taken += (await b.admit(who, call(10))).reserved_tokens
        except RateLimited:
            break
    assert taken == 990


async def test_an_instance_whose_clock_is_behind_is_refused_rather_than_reopening_the_window() -> None:
    store = EmbeddedCounterStore()
    ahead, behind = limiter(store, ManualClock(START + 60.01)), limiter(store, ManualClock(START + 59.99))
    await ahead.admit(caller(tokens_per_minute=1000), call(10))
    with pytest.raises(RateLimited):
        await behind.admit(caller(tokens_per_minute=1000), call(10))
    assert (await store.read("sub-1", "rate"))["window"] == START + 60


# --- when storage is unavailable -------------------------------------------------------------------------


async def test_storage_down_falls_back_to_per_instance_limits_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(START)
    store = CountingStore()
    lim = limiter(store, clock)
    who = caller(tokens_per_minute=1000)
    await lim.admit(who, call(100))
    store.down = True
    admitted = 100
    while True:  # the instance keeps enforcing the limit on its own
        try:
            admitted += (await lim.admit(who, call(50))).reserved_tokens
        except RateLimited:
            break
    assert admitted == 1000
    stats = lim.stats()
    assert stats["shared"] is False
    assert stats["store_failures"] == 1  # then it stops asking for a while
    assert stats["local_leases"] >= 1
    assert "enforcing limits per instance" in caplog.text
    store.down = False
    clock.advance(60)
    await lim.admit(who, call(100))
    assert lim.stats()["shared"] is True
    assert (await store.read("sub-1", "rate"))["window"] == START + 60


async def test_what_was_admitted_during_an_outage_is_charged_when_storage_returns() -> None:
    clock = ManualClock(START)
    store = CountingStore()
    a, b = limiter(store, clock), limiter(store, clock)
    who = caller(tokens_per_minute=10_000)
    await a.admit(who, call(10))
    store.down = True
    for _ in range(40):
        await a.admit(who, call(100))  # 4000 granted from a's own view
    store.down = False
    clock.advance(6)  # a tries storage again
    while True:
        try:
            await a.admit(who, call(100))
        except RateLimited:
            break
    record = await store.read("sub-1", "rate")
    assert record["tokens"] >= 4000  # the outage's admissions are in the shared record
    with pytest.raises(RateLimited):
        await b.admit(who, call(10_000 - 4000))


async def test_fail_closed_refuses_with_503_when_a_lease_is_needed() -> None:
    store = CountingStore()
    store.down = True
    lim = limiter(store, ManualClock(START), fail_closed=True)
    with pytest.raises(ServiceUnavailable) as refused:
        await lim.admit(caller(tokens_per_minute=1000), call(10))
    assert refused.value.status == 503
    assert refused.value.code == "limits_unavailable"
    assert int(refused.value.headers["Retry-After"]) >= 1


def test_the_rate_window_must_divide_a_minute() -> None:
    with pytest.raises(ValueError, match="divide a minute"):
        SharedLimiter(EmbeddedCounterStore(), ManualClock(), window_seconds=7)


def test_slices_shrink_as_the_window_fills() -> None:
    def lease(used: int) -> int:
        ask = LeaseAsk(0, Caps(10_000, None), need_tokens=100, need_requests=0, want_tokens=2**62, want_requests=0)
        return decide_lease({"window": 0, "tokens": used}, ask)[1].tokens

    assert lease(0) == 2500
    assert lease(8000) == 500
    assert lease(9800) == 100  # never less than the waiting request needs
    assert lease(9900) == 100
    refused = decide_lease({"window": 0, "tokens": 9950}, LeaseAsk(0, Caps(10_000, None), 100, 0, 2**62, 0))
    assert refused == (None, refused[1])  # nothing to write
    assert refused[1].short == "tokens"
