"""Backend choice: priority groups, weights, throttles per deployment, breakers, Retry-After parsing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from shared.backendconfig import BackendAuth, BackendConfig, BreakerPolicy
from shared.breaker import BreakerBoard
from shared.clock import ManualClock
from shared.routing import Candidate, Router, Unavailable, parse_retry_after
from shared.stores.embedded import EmbeddedBreakerStore


def _backend(name: str, priority: int, weight: int = 1, deployments: tuple[str, ...] = ("chat",)) -> BackendConfig:
    return BackendConfig(
        name=name,
        endpoint=f"http://{name}",
        priority=priority,
        weight=weight,
        deployments={d: f"{d}-real" for d in deployments},
        auth=BackendAuth("api_key", "k", "S"),
    )


def _router(*backends: BackendConfig, seed: int = 7) -> tuple[Router, BreakerBoard, ManualClock]:
    clock = ManualClock(1000.0)
    board = BreakerBoard(BreakerPolicy(mode="count", failures=1, trip_seconds=30), EmbeddedBreakerStore(), clock, "i")
    return Router(list(backends), board, clock, random.Random(seed)), board, clock


async def _pick(router: Router, tried: set[str] | None = None) -> str:
    choice = await router.next("chat", tried or set())
    assert isinstance(choice, Candidate)
    return choice.backend.name


async def test_lowest_priority_group_is_used_first() -> None:
    router, _, _ = _router(_backend("spare", 2), _backend("main", 1))
    assert {await _pick(router) for _ in range(20)} == {"main"}


async def test_weights_split_traffic_within_a_group() -> None:
    router, _, _ = _router(_backend("a", 1, weight=3), _backend("b", 1, weight=1))
    counts = Counter([await _pick(router) for _ in range(4000)])
    assert 0.70 < counts["a"] / 4000 < 0.80


async def test_failover_walks_the_group_then_the_next_priority() -> None:
    router, _, _ = _router(_backend("a", 1), _backend("b", 1), _backend("c", 2))
    first = await _pick(router)
    second = await _pick(router, {first})
    assert {first, second} == {"a", "b"}
    assert await _pick(router, {"a", "b"}) == "c"
    assert isinstance(await router.next("chat", {"a", "b", "c"}), Unavailable)


async def test_throttled_deployment_is_skipped_until_its_time_and_siblings_are_not() -> None:
    router, _, clock = _router(
        _backend("a", 1, deployments=("chat", "embed")), _backend("b", 2, deployments=("chat", "embed"))
    )
    router.throttle("a", "chat", 20)
    assert await _pick(router) == "b"
    embed = await router.next("embed", set())
    assert isinstance(embed, Candidate)
    assert embed.backend.name == "a"  # throttle is per deployment, not per endpoint
    clock.advance(20.1)
    assert await _pick(router) == "a"


async def test_everything_throttled_reports_the_soonest_retry() -> None:
    router, _, _ = _router(_backend("a", 1), _backend("b", 2))
    router.throttle("a", "chat", 20)
    router.throttle("b", "chat", 7)
    result = await router.next("chat", set())
    assert isinstance(result, Unavailable)
    assert result.retry_after == pytest.approx(7)
    assert result.throttled == 2


async def test_open_breaker_is_skipped() -> None:
    router, board, _ = _router(_backend("a", 1), _backend("b", 2))
    await board.failure(BreakerBoard.key("a", "chat"), retry_after=None, reason="500")
    assert await _pick(router) == "b"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "12"}, 12.0),
        ({"x-ratelimit-reset-requests": "250ms"}, 0.25),
        ({"x-ratelimit-reset-tokens": "2m"}, 120.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 10.0),
        ({}, 10.0),
    ],
)
def test_retry_after_from_backend_headers(headers: dict[str, str], expected: float) -> None:
    assert parse_retry_after(headers, 10.0) == pytest.approx(expected)
