"""Money budgets: spend shared by instances, each threshold alerted once per period, refusal at 100 %, the webhook.

Two keepers on one counter store stand for two instances (embedded, and
Table Storage on Azurite); end to end, the gateway in the local host posts
its alerts to a webhook receiver on 127.0.0.1 that checks every signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared.budgets.alerts import AlertSender, BudgetAlert
from shared.budgets.keeper import BUDGET_ROW, BudgetKeeper, add_spend
from shared.clock import ManualClock
from shared.config import TokenPrices, load_settings
from shared.errors import BudgetExceeded
from shared.gateway import Gateway
from shared.ledger import price
from shared.limits.windows import quota_window, utc_iso
from shared.models import Budget, BudgetAction, Caller, Limits, QuotaPeriod, Usage
from shared.outcomes import Outcome, RequestRecord
from shared.stores.factory import Stores, build_stores
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import unique_prefix
from tests.fixtures.servers import GatewayServer, settings_for
from tests.test_ratelimit import START

PRICES = {"chat": TokenPrices(input=1.0, output=2.0, cached_input=0.25)}  # per 1,000 tokens
BACKENDS = json.dumps([{"name": "b", "endpoint": "http://127.0.0.1:9", "deployments": ["chat"]}])
SECRET = "webhook-secret-for-tests"
ADMIN = "test-admin-key"


def test_cached_prompt_tokens_cost_the_cached_rate_and_fall_back_to_input() -> None:
    assert price(PRICES, "chat", 1000, 1000, cached=400) == pytest.approx(0.6 + 0.1 + 2.0)
    assert price({"chat": TokenPrices(input=1.0, output=2.0)}, "chat", 1000, 0, cached=400) == pytest.approx(1.0)
    assert dict(TokenPrices(input=1.0, output=2.0)) == {"input": 1.0, "output": 2.0}
    assert Usage.from_json(
        {"prompt_tokens": 9, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}
    ) == (Usage(9, 3, 4))


def test_the_shared_record_adds_spend_and_claims_each_threshold_once() -> None:
    thresholds = (50, 80, 100)
    after = add_spend({}, 100, 1000, 600, thresholds)
    assert after == {"window": 100, "spent": 600, "alerted": 50}
    assert add_spend(after, 100, 1000, 100, thresholds) == {"window": 100, "spent": 700, "alerted": 50}
    assert add_spend(after, 100, 1000, 0, thresholds) is None  # a read: nothing to write
    assert add_spend({"window": 100, "spent": 990, "alerted": 80}, 200, 1000, 10, thresholds) == {
        "window": 200,
        "spent": 10,
        "alerted": 0,
    }
    assert add_spend({"window": 300, "spent": 5}, 200, 1000, 10, thresholds) is None  # a later period is not touched


class Alerts(AlertSender):
    def __init__(self) -> None:
        async def no_session() -> Any:
            raise AssertionError("no webhook here")

        super().__init__(no_session)
        self.fired: list[BudgetAlert] = []

    def fire(self, alert: BudgetAlert) -> None:
        self.fired.append(alert)


@pytest.fixture(params=["embedded", pytest.param("tables", marks=pytest.mark.azurite)])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    env = {"GATEWAY_BACKENDS": BACKENDS}
    if request.param == "tables":
        azurite = request.getfixturevalue("azurite")
        env |= {"GATEWAY_STORAGE": azurite.connection_string, "GATEWAY_TABLE_PREFIX": unique_prefix()}
    built = build_stores(load_settings(env))
    yield built
    await built.close()


def record(caller: Caller, prompt: int, completion: int) -> RequestRecord:
    return RequestRecord(
        "rid", "chat/completions", 200, Outcome.SUCCESS, caller, "chat", usage=Usage(prompt, completion)
    )


async def test_two_instances_alert_each_threshold_once_then_refuse_until_the_period_ends(stores: Stores) -> None:
    clock = ManualClock(START)
    alerts = Alerts()
    keepers = [
        BudgetKeeper(stores.counters, clock, alerts, prices=PRICES, deployments=frozenset({"chat"}), sync_seconds=5)
        for _ in range(2)
    ]
    budget = Budget(1.0, QuotaPeriod.DAILY, "EUR", (50, 80, 100), BudgetAction.REFUSE)
    caller = Caller("sub-1", "team", Limits(), budget=budget)
    # Each call costs 0.1 EUR (100 prompt tokens at 1.0 per 1,000 plus nothing else).
    for i in range(12):
        keeper = keepers[i % 2]
        try:
            await keeper.check(caller)
        except BudgetExceeded:
            break
        keeper.charge(record(caller, 100, 0))
        await keeper.close()  # let the sync a threshold started finish (and flush what is pending)
        clock.advance(1)
    assert [a.threshold for a in alerts.fired] == [50, 80, 100]  # once each, across both instances
    assert alerts.fired[-1].currency == "EUR"
    assert alerts.fired[-1].spent == pytest.approx(1.0)
    for keeper in keepers:
        clock.advance(5)  # each instance reads the record again
        with pytest.raises(BudgetExceeded) as refused:
            await keeper.check(caller)
        end = quota_window(clock.now(), QuotaPeriod.DAILY).end
        assert refused.value.status == 403
        assert refused.value.code == "budget_exceeded"
        assert refused.value.headers["x-ratelimit-reset-budget"] == utc_iso(end)
        assert utc_iso(end) in refused.value.message
    status = await keepers[0].status("sub-1", budget)
    # The other instance last read the record under a sync interval ago: it may admit one call more (the lag).
    assert 1.0 <= status["spent"] <= 1.1 + 1e-9
    assert status["remaining"] == 0
    assert status["alerted_up_to"] == 100
    stored = await stores.counters.read("sub-1", BUDGET_ROW)
    assert stored["alerted"] == 100
    # A new day: spend starts again from zero, and so do the alerts.
    clock.t = quota_window(clock.now(), QuotaPeriod.DAILY).end + 1
    await keepers[1].check(caller)
    for _ in range(5):
        keepers[1].charge(record(caller, 100, 0))
    await keepers[1].close()
    assert [a.threshold for a in alerts.fired] == [50, 80, 100, 50]


async def test_an_alert_only_budget_never_refuses() -> None:
    stores = build_stores(load_settings({"GATEWAY_BACKENDS": BACKENDS}))
    clock, alerts = ManualClock(START), Alerts()
    keeper = BudgetKeeper(stores.counters, clock, alerts, prices=PRICES, deployments=frozenset({"chat"}))
    caller = Caller("sub-1", "team", Limits(), budget=Budget(0.1, QuotaPeriod.MONTHLY, action=BudgetAction.ALERT))
    for _ in range(3):
        await keeper.check(caller)
        keeper.charge(record(caller, 1000, 0))
        await keeper.close()
    assert [a.threshold for a in alerts.fired] == [50, 80, 100]


# --- end to end: the gateway, a webhook receiver -------------------------------------------------


class Receiver:
    """A webhook endpoint on 127.0.0.1 that fails its first delivery with 500 (to prove the retry)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.failed_first = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if not receiver.failed_first:
                    receiver.failed_first = True
                    self.send_response(500)
                else:
                    receiver.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    thread = SimulatorThread(SimulatorConfig(name="sim", deployments=("chat",), api_key="sim-key")).start()
    yield thread
    thread.stop()


def call(url: str, path: str, body: Any, headers: dict[str, str], method: str = "POST") -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url + path, data=data, method=method, headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_budget_crossing_its_thresholds_alerts_each_once_by_signed_webhook_then_refuses(
    gateway_server: Callable[..., GatewayServer], sim: SimulatorThread, receiver: Receiver
) -> None:
    settings = settings_for(
        [{"name": "sim", "endpoint": sim.url, "deployments": ["chat"]}],
        GATEWAY_ADMIN_KEY=ADMIN,
        GATEWAY_PRICES=json.dumps({"chat": {"input": 5.0, "output": 5.0}}),
        GATEWAY_BUDGET_WEBHOOK_URL=receiver.url,
        GATEWAY_BUDGET_WEBHOOK_SECRET=SECRET,
    )
    gw = gateway_server(lambda: Gateway(settings))
    budget = {"amount": 1.0, "period": "daily", "currency": "USD", "thresholds": [50, 80, 100]}
    status, created = call(
        gw.url, "/gateway/admin/subscriptions", {"name": "app", "budget": budget}, {"x-admin-key": ADMIN}
    )
    assert status == 201, created
    key = {"api-key": created["primary_key"]}
    path = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
    body = {"messages": [{"role": "user", "content": "Tell me about budgets."}], "max_tokens": 30}
    statuses = []
    for _ in range(60):
        status, answer = call(gw.url, path, body, key)
        statuses.append(status)
        if status == 403:
            assert answer["error"]["code"] == "budget_exceeded"
            break
    assert statuses[-1] == 403
    assert set(statuses[:-1]) == {200}
    deadline = time.monotonic() + 15  # the first delivery failed: its retry comes after a second
    while len(receiver.deliveries) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more arrives
    payloads = []
    for headers, raw in receiver.deliveries:
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-gateway-signature"], expected)
        payloads.append(json.loads(raw))
    assert sorted(p["threshold"] for p in payloads) == [50, 80, 100]  # each once, the failed one retried
    assert all(p["subscription_id"] == created["id"] for p in payloads)
    status, usage = call(gw.url, "/usage", None, key, method="GET")
    assert status == 200
    assert usage["budget"]["spent"] >= 1.0
    assert usage["budget"]["remaining"] == 0
    status, shown = call(gw.url, f"/gateway/admin/subscriptions/{created['id']}", None, {"x-admin-key": ADMIN}, "GET")
    assert shown["budget"]["amount"] == 1.0
    assert shown["budget_status"]["alerted_up_to"] == 100
