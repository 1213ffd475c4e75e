"""Limits per end user: naming them, their own records beside the subscription's, two instances on Azurite."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from shared.clock import ManualClock
from shared.errors import BadRequest, RateLimited
from shared.gateway import Gateway
from shared.limits.limiter import SharedLimiter
from shared.limits.users import ANONYMOUS, with_end_user
from shared.models import AuthMode, Caller, GatewayRequest, Limits, QuotaPeriod, UserKey, UserLimits
from shared.stores.embedded import EmbeddedCounterStore
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.servers import GatewayServer, settings_for
from tests.test_ratelimit import START, call, fixed_estimate

ADMIN = "test-admin-key"


def request(headers: dict[str, str] | None = None, client_ip: str | None = None) -> GatewayRequest:
    return GatewayRequest("POST", "/v1/chat/completions", headers or {}, {}, b"{}", "rid", client_ip)


def team(key: UserKey, **limits: Any) -> Caller:
    user = UserLimits(key, "x-user-id", **(limits or {"tokens_per_minute": 100}))
    return Caller("sub-1", "team", Limits(tokens_per_minute=10_000), user_limits=user)


# --- who the end user is ------------------------------------------------------------------------


def test_the_end_user_is_the_header_the_oid_or_the_client_address_as_the_subscription_chose() -> None:
    assert with_end_user(team(UserKey.HEADER), request({"x-user-id": " alice "})).end_user == "alice"
    oid_caller = replace(team(UserKey.OID), principal="0a0a", auth_mode=AuthMode.ENTRA)
    assert with_end_user(oid_caller, request({"x-user-id": "mallory"})).end_user == "0a0a"
    ip = team(UserKey.IP)
    assert with_end_user(ip, request({"x-forwarded-for": "203.0.113.7:50123, 10.0.0.4"}, "10.0.0.4")).end_user == (
        "203.0.113.7"
    )
    assert with_end_user(ip, request({"x-forwarded-for": "[2001:db8::1]:443"})).end_user == "2001:db8::1"
    assert with_end_user(ip, request({}, "198.51.100.2")).end_user == "198.51.100.2"


def test_an_end_user_that_cannot_be_named_shares_one_record_and_a_subscription_without_user_limits_reads_nothing() -> (
    None
):
    assert with_end_user(team(UserKey.HEADER), request()).end_user == ANONYMOUS
    assert with_end_user(team(UserKey.OID), request({"x-user-id": "alice"})).end_user == ANONYMOUS
    plain = Caller("sub-1", "team", Limits())
    assert with_end_user(plain, request({"x-user-id": "alice"})).end_user is None
    with pytest.raises(BadRequest):
        with_end_user(team(UserKey.HEADER), request({"x-user-id": "x" * 300}))


# --- the limiter ----------------------------------------------------------------------------------


async def test_each_end_user_has_their_own_limit_inside_the_subscriptions() -> None:
    limiter = SharedLimiter(EmbeddedCounterStore(), ManualClock(START), estimator=fixed_estimate)
    caller = team(UserKey.HEADER, tokens_per_minute=100)
    alice = with_end_user(caller, request({"x-user-id": "alice"}))
    bob = with_end_user(caller, request({"x-user-id": "bob"}))
    first = await limiter.admit(alice, call(60))
    assert first.headers["x-ratelimit-user-limit-tokens"] == "100"
    assert "x-ratelimit-limit-tokens" in first.headers  # the subscription's own, beside the user's
    await limiter.settle(first, 60)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(alice, call(60))
    assert "end user" in refused.value.message
    assert "retry-after" in {k.lower() for k in refused.value.headers}
    await limiter.settle(await limiter.admit(bob, call(60)), 60)  # bob has his own


async def test_a_refusal_by_the_subscription_gives_the_end_users_reservation_back() -> None:
    limiter = SharedLimiter(EmbeddedCounterStore(), ManualClock(START), estimator=fixed_estimate)
    user = UserLimits(UserKey.HEADER, token_quota=1000, token_quota_period=QuotaPeriod.DAILY)
    caller = with_end_user(
        Caller("sub-1", "team", Limits(tokens_per_minute=50), user_limits=user), request({"x-user-id": "a"})
    )
    with pytest.raises(RateLimited):
        await limiter.admit(caller, call(80))
    admission = await limiter.admit(caller, call(40))
    assert admission.headers["x-ratelimit-user-remaining-quota-tokens"] == "960"


# --- two instances on Azurite ----------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    thread = SimulatorThread(SimulatorConfig(name="sim", deployments=("chat",), api_key="sim-key")).start()
    yield thread
    thread.stop()


def post(url: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, method="POST", headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read())


@pytest.mark.azurite
def test_an_end_users_limit_holds_across_two_instances_sharing_azurite(
    azurite: Azurite, sim: SimulatorThread, gateway_server: Callable[..., GatewayServer]
) -> None:
    clock = ManualClock(START)  # both instances read one clock: the whole test runs inside one window
    settings = settings_for(
        [{"name": "sim", "endpoint": sim.url, "deployments": ["chat"]}],
        GATEWAY_ADMIN_KEY=ADMIN,
        GATEWAY_STORAGE=azurite.connection_string,
        GATEWAY_TABLE_PREFIX=unique_prefix(),
    )
    one, two = (gateway_server(lambda: Gateway(settings, clock=clock)) for _ in range(2))
    user_tpm = 1500
    status, _, created = post(
        one.url,
        "/gateway/admin/subscriptions",
        {"name": "app", "tokens_per_minute": 100_000, "user_limits": {"key": "header", "tokens_per_minute": user_tpm}},
        {"x-admin-key": ADMIN},
    )
    assert status == 201, created
    key = created["primary_key"]
    path = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
    body = {"messages": [{"role": "user", "content": "Say something about rate limits."}], "max_tokens": 40}
    used, refused, admitted_on = 0, 0, set()
    for i in range(80):
        gw = (one, two)[i % 2]
        status, headers, answer = post(gw.url, path, body, {"api-key": key, "x-user-id": "alice"})
        if status == 200:
            used += answer["usage"]["total_tokens"]
            admitted_on.add(gw.port)
            assert "x-ratelimit-user-remaining-tokens" in headers
        else:
            assert status == 429, answer
            assert "end user" in answer["error"]["message"]
            refused += 1
    assert admitted_on == {one.port, two.port}
    assert refused > 0
    assert user_tpm * 0.6 <= used <= user_tpm * 1.05, used  # one limit for alice, shared by both instances
    # Bob has his own limit, on either instance; the subscription's limit is far from reached.
    for gw in (one, two):
        status, _, _ = post(gw.url, path, body, {"api-key": key, "x-user-id": "bob"})
        assert status == 200
