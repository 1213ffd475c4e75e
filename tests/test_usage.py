"""Usage views: `GET /usage` for a subscriber, `GET /gateway/admin/usage` and `python -m shared.admin usage`
for operators, and `GET /metrics`, all over real HTTP to a gateway in front of the simulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from shared.admin import usage
from shared.admin.cli import usage_main
from shared.clock import SYSTEM_CLOCK
from shared.ledger import HOUR, hour_of
from shared.limits.windows import quota_window
from shared.models import QuotaPeriod
from shared.stores.protocols import UsageBatch, UsageCounts, UsageKey
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.observed import Observed, backend, observe
from tests.fixtures.servers import GatewayServer

ALICE_KEY, BOB_KEY = "alice-key-0123456789", "bob-key-0123456789"
ADMIN = {"x-admin-key": "admin-key-0123456789"}
PRICES = json.dumps({"gpt-4o-mini": {"input": 0.15, "output": 0.6}})
SUBSCRIPTIONS = {
    ALICE_KEY: {
        "name": "alice",
        "tokens_per_minute": 100_000,
        "requests_per_minute": 600,
        "token_quota": 1_000_000,
        "token_quota_period": "monthly",
    },
    BOB_KEY: {"name": "bob"},
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(name="usage-sim", deployments=("gpt-4o-mini",), api_key="sim-key")) as s:
        yield s


@pytest.fixture
def stack(gateway_server: Callable[..., GatewayServer], sim: SimulatorThread) -> Observed:
    return observe(
        gateway_server,
        [backend("sim", sim)],
        subscriptions=SUBSCRIPTIONS,
        GATEWAY_PRICES=PRICES,
        GATEWAY_METRICS_ENDPOINT="true",
    )


async def call(stack: Observed, key: str, *, stream: bool = False) -> tuple[int, int]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.server.url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
            json=body,
            headers={"api-key": key},
        ) as resp,
    ):
        text = await resp.text()
        assert resp.status == 200, text
    if not stream:
        u = json.loads(text)["usage"]
        return u["prompt_tokens"], u["completion_tokens"]
    for line in text.splitlines():
        if line.startswith("data: {"):
            u = json.loads(line[6:]).get("usage")
            if u:
                return u["prompt_tokens"], u["completion_tokens"]
    raise AssertionError("no usage chunk")


async def get(stack: Observed, path: str, headers: dict[str, str], **params: str) -> tuple[int, Any, Mapping[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.server.url + path, headers=headers, params=params) as r,
    ):
        text = await r.text()
        return r.status, json.loads(text) if r.content_type == "application/json" else text, CIMultiDict(r.headers)


def previous_month_hour() -> int:
    current = quota_window(SYSTEM_CLOCK.now(), QuotaPeriod.MONTHLY)
    return hour_of(current.start - HOUR)


# --- GET /usage --------------------------------------------------------------------------------


async def test_a_subscriber_sees_its_own_use_this_period_and_last_with_its_limits(stack: Observed) -> None:
    used = [await call(stack, ALICE_KEY), await call(stack, ALICE_KEY, stream=True), await call(stack, ALICE_KEY)]
    await call(stack, BOB_KEY)  # someone else's: not in alice's view
    earlier = UsageKey(stack.ids[ALICE_KEY], previous_month_hour(), "gpt-4o-mini", "sim")
    batch = UsageBatch("earlier-instance", 1, {earlier: UsageCounts(1000, 500, 0, {"success": 4}, 0.45, "alice")})
    stack.server.run(stack.gateway.ledger.store.apply(batch))

    status, body, headers = await get(stack, "/usage", {"api-key": ALICE_KEY})
    assert status == 200, body
    assert headers["x-request-id"]
    prompt, completion = sum(u[0] for u in used), sum(u[1] for u in used)
    current = body["current"]
    assert body["subscription"] == {"id": stack.ids[ALICE_KEY], "name": "alice"}
    assert body["period"] == "monthly"
    assert (current["prompt_tokens"], current["completion_tokens"], current["requests"]) == (prompt, completion, 3)
    assert current["requests_by_outcome"] == {"success": 3}
    assert current["cost"] == pytest.approx((prompt * 0.15 + completion * 0.6) / 1000, abs=1e-6)
    assert current["by_deployment"]["gpt-4o-mini"]["total_tokens"] == prompt + completion
    assert (body["previous"]["total_tokens"], body["previous"]["requests"]) == (1500, 4)
    assert body["previous"]["cost"] == pytest.approx(0.45)
    quota = body["limits"]["token_quota"]
    assert quota["limit"] == 1_000_000
    assert quota["used"] == prompt + completion
    assert quota["remaining"] == 1_000_000 - prompt - completion
    assert quota["resets_at"] == current["to"]
    assert body["limits"]["tokens_per_minute"]["limit"] == 100_000
    assert body["limits"]["requests_per_minute"]["limit"] == 600


async def test_usage_without_a_quota_uses_the_period_asked_for(stack: Observed) -> None:
    await call(stack, BOB_KEY)
    status, body, _ = await get(stack, "/usage", {"api-key": BOB_KEY}, period="daily")
    assert status == 200
    assert body["period"] == "daily"
    assert body["current"]["requests"] == 1
    assert body["limits"]["token_quota"] is None
    status, body, _ = await get(stack, "/usage", {"api-key": BOB_KEY}, period="yearly")
    assert status == 400
    assert body["error"]["param"] == "period"


@pytest.mark.parametrize("headers", [{}, {"api-key": "not-a-key"}, ADMIN])
async def test_usage_needs_a_subscription_key(stack: Observed, headers: dict[str, str]) -> None:
    status, body, _ = await get(stack, "/usage", headers)
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"


# --- GET /gateway/admin/usage ------------------------------------------------------------------


async def test_operators_add_usage_up_by_subscription_deployment_or_backend(stack: Observed) -> None:
    alice = [await call(stack, ALICE_KEY) for _ in range(2)]
    bob = [await call(stack, BOB_KEY)]
    status, body, _ = await get(stack, "/gateway/admin/usage", ADMIN, group_by="subscription")
    assert status == 200, body
    rows = {r["subscription"]: r for r in body["data"]}
    assert rows[stack.ids[ALICE_KEY]]["subscription_name"] == "alice"
    assert rows[stack.ids[ALICE_KEY]]["total_tokens"] == sum(p + c for p, c in alice)
    assert rows[stack.ids[BOB_KEY]]["requests"] == 1
    assert body["total"]["total_tokens"] == sum(p + c for p, c in alice + bob)
    for group, label in (("deployment", "gpt-4o-mini"), ("backend", "sim")):
        status, body, _ = await get(stack, "/gateway/admin/usage", ADMIN, group_by=group)
        assert [(r[group], r["requests"]) for r in body["data"]] == [(label, 3)]
    status, body, _ = await get(stack, "/gateway/admin/usage", ADMIN, subscription=stack.ids[BOB_KEY])
    assert body["total"]["requests"] == 1


async def test_admin_usage_takes_a_time_range(stack: Observed) -> None:
    await call(stack, ALICE_KEY)
    old = UsageKey(
        stack.ids[ALICE_KEY], hour_of(datetime(2025, 3, 1, 10, tzinfo=UTC).timestamp()), "gpt-4o-mini", "sim"
    )
    stack.server.run(stack.gateway.ledger.store.apply(UsageBatch("w", 1, {old: UsageCounts(7, 3, 0, {"success": 1})})))
    status, body, _ = await get(stack, "/gateway/admin/usage", ADMIN, **{"from": "2025-03-01", "to": "2025-03-02"})
    assert status == 200
    assert (body["from"], body["to"], body["total"]["total_tokens"]) == (
        "2025-03-01T00:00:00Z",
        "2025-03-02T00:00:00Z",
        10,
    )
    # a `to` inside an hour includes that hour
    status, body, _ = await get(
        stack, "/gateway/admin/usage", ADMIN, **{"from": "2025-03-01T10:00Z", "to": "2025-03-01T10:30Z"}
    )
    assert body["total"]["requests"] == 1
    status, body, _ = await get(
        stack, "/gateway/admin/usage", ADMIN, **{"from": "2025-03-01T11:00Z", "to": "2025-03-01T12:00Z"}
    )
    assert body["total"]["requests"] == 0


@pytest.mark.parametrize(
    ("headers", "params", "status", "code"),
    [
        ({}, {}, 401, "invalid_admin_key"),
        ({"x-admin-key": "wrong"}, {}, 401, "invalid_admin_key"),
        ({"api-key": ALICE_KEY}, {}, 401, "invalid_admin_key"),
        (ADMIN, {"group_by": "region"}, 400, "invalid_request"),
        (ADMIN, {"from": "yesterday"}, 400, "invalid_request"),
        (ADMIN, {"from": "2025-03-02", "to": "2025-03-01"}, 400, "invalid_request"),
    ],
)
async def test_admin_usage_refuses_bad_keys_and_bad_questions(
    stack: Observed, headers: dict[str, str], params: dict[str, str], status: int, code: str
) -> None:
    got, body, _ = await get(stack, "/gateway/admin/usage", headers, **params)
    assert (got, body["error"]["code"]) == (status, code)


async def test_the_admin_api_still_answers_beside_the_usage_route(stack: Observed) -> None:
    status, body, _ = await get(stack, "/gateway/admin/subscriptions", ADMIN)
    assert status == 200
    assert {s["name"] for s in body["data"]} == {"alice", "bob"}


# --- the command line ---------------------------------------------------------------------------


async def test_the_cli_prints_a_table_or_json_from_a_running_gateway(
    stack: Observed, capsys: pytest.CaptureFixture[str]
) -> None:
    used = await call(stack, ALICE_KEY)
    args = ["--url", stack.server.url, "--admin-key", ADMIN["x-admin-key"]]
    assert await asyncio_main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["total_tokens"] == sum(used)
    assert await asyncio_main([*args, "--group-by", "deployment"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("usage ")
    assert table[0].endswith(" by deployment")
    assert table[2].split() == ["deployment", "requests", "prompt", "completion", "total", "cached", "cost", "outcomes"]
    assert table[4].split()[:2] == ["gpt-4o-mini", "1"]
    assert table[-1].split()[:5] == ["TOTAL", "1", str(used[0]), str(used[1]), str(sum(used))]


async def asyncio_main(argv: list[str]) -> int:
    """`usage_main` runs its own event loop: give it a thread of its own."""
    import asyncio

    return await asyncio.to_thread(usage_main, argv)


@pytest.mark.azurite
async def test_the_cli_reads_the_ledger_in_table_storage_directly(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.config import StorageConfig
    from shared.stores.tables.account import TableAccount
    from shared.stores.tables.ledger import TableLedgerStore

    prefix = unique_prefix()
    hour = hour_of(SYSTEM_CLOCK.now())
    account = TableAccount(StorageConfig(connection_string=azurite.connection_string), prefix=prefix)
    try:
        rows = {
            UsageKey("sub-a", hour, "gpt-4o-mini", "east"): UsageCounts(100, 50, 0, {"success": 2}, 0.1, "team-a"),
            UsageKey("sub-b", hour, "gpt-4o-mini", "west"): UsageCounts(10, 5, 7, {"cache_hit": 1}, 0.0, "team-b"),
        }
        await TableLedgerStore(account).apply(UsageBatch("w", 1, rows))
    finally:
        await account.close()
    monkeypatch.setenv("GATEWAY_STORAGE", azurite.connection_string)
    monkeypatch.setenv("GATEWAY_TABLE_PREFIX", prefix)
    assert await asyncio_main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["subscription_name"], r["total_tokens"], r["cached_tokens"]) for r in report["data"]] == [
        ("team-a", 150, 0),
        ("team-b", 15, 7),
    ]


def test_the_cli_without_shared_storage_says_to_ask_a_running_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_STORAGE", raising=False)
    monkeypatch.delenv("GATEWAY_STORAGE__tableServiceUri", raising=False)
    with pytest.raises(SystemExit, match="--url"):
        usage_main([])


def test_time_ranges_are_whole_utc_hours() -> None:
    now = datetime(2025, 6, 1, 12, 30, tzinfo=UTC).timestamp()
    start, end = usage.time_range(None, None, now)
    assert (end - start, datetime.fromtimestamp(end, UTC).hour) == (25 * HOUR, 13)
    assert usage.time_range("1748736000", "2025-06-01T02:00:00+00:00", now) == (1748736000, 1748736000 + 2 * HOUR)


# --- GET /metrics --------------------------------------------------------------------------------


async def test_metrics_are_prometheus_text_behind_the_admin_key(stack: Observed) -> None:
    await call(stack, ALICE_KEY)
    status, text, headers = await get(stack, "/metrics", ADMIN)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert (
        f'gateway_requests_total{{gateway_outcome="success",http_response_status_code="200",gateway_subscription_id="{stack.ids[ALICE_KEY]}"'
        in text
    )
    assert "gen_ai_client_token_usage_bucket{" in text
    assert ALICE_KEY not in text
    for headers in ({}, {"x-admin-key": "nope"}, {"api-key": ALICE_KEY}):
        status, _, _ = await get(stack, "/metrics", headers)
        assert status == 401


async def test_metrics_are_off_unless_asked_for(
    gateway_server: Callable[..., GatewayServer], sim: SimulatorThread
) -> None:
    plain = observe(gateway_server, [backend("sim", sim)])
    status, body, _ = await get(plain, "/metrics", ADMIN)
    assert status == 404
    assert body["error"]["code"] == "metrics_off"


async def test_limiter_reports_what_is_left_of_each_limit() -> None:
    import json as _json

    from shared.api import ApiCall
    from shared.clock import ManualClock
    from shared.limits.limiter import SharedLimiter
    from shared.models import Caller, Limits, Operation, QuotaPeriod
    from shared.stores.embedded import EmbeddedCounterStore

    clock = ManualClock(1_800_000_000.0)
    limiter = SharedLimiter(
        EmbeddedCounterStore(), clock, window_seconds=60, default_completion_tokens=10, fail_closed=False
    )
    caller = Caller(
        "sub-1", "one", Limits(tokens_per_minute=1000, requests_per_minute=10, token_quota=5000,
                               token_quota_period=QuotaPeriod.DAILY)
    )  # fmt: skip
    before = await limiter.remaining(caller)
    assert before == {"tokens_per_minute": 1000, "requests_per_minute": 10, "token_quota": 5000}
    body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 10}
    call = ApiCall(Operation.CHAT, "chat", body, "2024-10-21")
    admission = await limiter.admit(caller, call)
    await limiter.settle(admission, 50)
    after = await limiter.remaining(caller)
    assert after["tokens_per_minute"] == 950
    assert after["requests_per_minute"] == 9
    assert after["token_quota"] == 4950
    assert _json.dumps(after)
