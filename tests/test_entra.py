"""Entra ID callers: tokens minted with a local RSA key, signing keys served over HTTP on 127.0.0.1.

The validator is driven directly (time moved by hand) for every way a token
can be wrong, then the whole path end to end: the `openai` SDK with
`azure_ad_token_provider` through the local Functions host.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from openai import AzureOpenAI, PermissionDeniedError

from shared.admin.subscriptions import SubscriptionAdmin
from shared.clock import ManualClock
from shared.config import load_settings
from shared.entra.callers import EntraCallers
from shared.entra.keys import MIN_REFETCH_SECONDS, REFETCH_PER_KID_SECONDS
from shared.entra.tokens import InvalidToken, TokenValidator, looks_like_jwt
from shared.errors import ConfigError, Forbidden, Unauthorized
from shared.gateway import Gateway
from shared.stores.embedded import EmbeddedSubscriptionStore
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.entra import CALLER_OID, TENANT, EntraTenant, SigningKey, random_oid
from tests.fixtures.servers import GatewayServer, settings_for

NOW = 1_800_000_000.0
ADMIN = "test-admin-key"
MESSAGES = [{"role": "user", "content": "Hello"}]
BACKENDS = json.dumps([{"name": "b", "endpoint": "http://127.0.0.1:9", "deployments": ["chat"]}])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def validator_for(entra: EntraTenant, session: aiohttp.ClientSession, clock: ManualClock) -> TokenValidator:
    config = load_settings({"GATEWAY_BACKENDS": BACKENDS, **entra.settings()}).entra
    assert config is not None

    async def provide() -> aiohttp.ClientSession:
        return session

    return TokenValidator(config, provide, clock)


# --- configuration ------------------------------------------------------------------------------


def test_entra_is_off_without_a_tenant_and_every_problem_is_listed() -> None:
    assert load_settings({"GATEWAY_BACKENDS": BACKENDS}).entra is None
    with pytest.raises(ConfigError) as bad:
        load_settings(
            {
                "GATEWAY_BACKENDS": BACKENDS,
                "GATEWAY_ENTRA_TENANT_ID": "contoso",
                "GATEWAY_ENTRA_JWKS_URL": "http://keys.example.com/keys",
            }
        )
    text = str(bad.value)
    assert "GATEWAY_ENTRA_TENANT_ID" in text
    assert "GATEWAY_ENTRA_AUDIENCE" in text
    assert "GATEWAY_ENTRA_JWKS_URL" in text


def test_the_tenants_v1_and_v2_issuers_and_its_key_url_are_the_defaults() -> None:
    entra = load_settings(
        {"GATEWAY_BACKENDS": BACKENDS, "GATEWAY_ENTRA_TENANT_ID": TENANT, "GATEWAY_ENTRA_AUDIENCE": "api://gw, abc"}
    ).entra
    assert entra is not None
    assert entra.issuers == (f"https://sts.windows.net/{TENANT}/", f"https://login.microsoftonline.com/{TENANT}/v2.0")
    assert entra.jwks_url == f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
    assert entra.audiences == ("api://gw", "abc")
    assert (entra.admin_role, entra.reader_role) == ("Gateway.Admin", "Gateway.Reader")


def test_a_subscription_key_never_looks_like_a_token() -> None:
    from shared.auth import new_key

    assert not looks_like_jwt(new_key())
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJhIjoxfQ.c2ln")


# --- the validator ------------------------------------------------------------------------------


async def test_v1_and_v2_tokens_of_the_tenant_are_accepted(entra: EntraTenant, session: aiohttp.ClientSession) -> None:
    clock = ManualClock(NOW)
    validator = validator_for(entra, session, clock)
    for version in (1, 2):
        identity = await validator.validate(entra.mint(version=version, now=NOW, roles=["Task.Read"]))
        assert identity.oid == CALLER_OID
        assert identity.tenant_id == TENANT
        assert identity.app_id is not None
        assert "Task.Read" in identity.roles
    assert entra.fetches == 1  # the keys are cached


def _wrong_tokens(entra: EntraTenant) -> dict[str, str]:
    impostor = SigningKey("key-1")  # same key id, another key
    return {
        "expired": entra.mint(now=NOW - 7200, lifetime=3600),
        "not yet valid": entra.mint(now=NOW, nbf=int(NOW + 600)),
        "wrong audience": entra.mint(now=NOW, aud="api://someone-else"),
        "wrong issuer": entra.mint(now=NOW, iss="https://login.microsoftonline.com/other-tenant/v2.0"),
        "bad signature": entra.mint(impostor, now=NOW),
        "alg none": entra.forge_none(now=NOW),
        "hs256 with the public key": entra.forge_hs256(now=NOW),
        "no expiry": entra.mint(now=NOW, exp=None),
        "no oid": entra.mint(now=NOW, oid=None),
    }


async def test_every_wrong_token_is_refused_with_its_reason(entra: EntraTenant, session: aiohttp.ClientSession) -> None:
    validator = validator_for(entra, session, ManualClock(NOW))
    reasons = {}
    for name, token in _wrong_tokens(entra).items():
        with pytest.raises(InvalidToken) as refused:
            await validator.validate(token)
        reasons[name] = refused.value.reason
    assert reasons["expired"] == "expired"
    assert reasons["not yet valid"] == "not yet valid"
    assert reasons["wrong audience"] == "wrong audience"
    assert reasons["wrong issuer"] == "wrong issuer"
    assert reasons["bad signature"] == "bad signature"
    assert "none" in reasons["alg none"]
    assert "HS256" in reasons["hs256 with the public key"]


async def test_a_minute_of_clock_skew_is_tolerated_and_no_more(
    entra: EntraTenant, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock(NOW)
    validator = validator_for(entra, session, clock)
    token = entra.mint(now=NOW, lifetime=100)
    clock.advance(100 + 59)
    await validator.validate(token)
    clock.advance(2)
    with pytest.raises(InvalidToken, match="expired"):
        await validator.validate(token)
    early = entra.mint(now=NOW, nbf=int(NOW + 50))
    clock.t = NOW
    await validator.validate(early)


async def test_an_unknown_key_id_refetches_once_then_refuses_without_asking_again(
    entra: EntraTenant, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock(NOW)
    validator = validator_for(entra, session, clock)
    await validator.validate(entra.mint(now=NOW))
    assert entra.fetches == 1
    stranger = SigningKey("key-unknown")
    clock.advance(MIN_REFETCH_SECONDS)
    for _ in range(5):
        with pytest.raises(InvalidToken, match="unknown signing key"):
            await validator.validate(entra.mint(stranger, now=NOW))
    assert entra.fetches == 2  # one refetch for the new kid, then none
    # Another unknown kid right away: the global minimum interval holds it back too.
    with pytest.raises(InvalidToken):
        await validator.validate(entra.mint(SigningKey("key-other"), now=NOW))
    assert entra.fetches == 2
    clock.advance(REFETCH_PER_KID_SECONDS)
    with pytest.raises(InvalidToken):
        await validator.validate(entra.mint(stranger, now=NOW))
    assert entra.fetches == 3


async def test_a_rolled_signing_key_is_picked_up_on_its_first_token(
    entra: EntraTenant, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock(NOW)
    validator = validator_for(entra, session, clock)
    await validator.validate(entra.mint(now=NOW))
    rolled = SigningKey("key-2")
    entra.keys.append(rolled)
    clock.advance(MIN_REFETCH_SECONDS)
    identity = await validator.validate(entra.mint(rolled, now=NOW))
    assert identity.oid == CALLER_OID


async def test_a_valid_token_maps_to_the_subscription_listing_its_oid_and_others_get_403(
    entra: EntraTenant, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock(NOW)
    store = EmbeddedSubscriptionStore()
    admin = SubscriptionAdmin(store)
    sub = await admin.create({"name": "app", "identities": [CALLER_OID.upper()], "tokens_per_minute": 500})
    callers = EntraCallers(validator_for(entra, session, clock), store, clock, cache_seconds=10)
    caller = await callers.authenticate(entra.mint(now=NOW))
    assert caller.subscription_id == sub["id"]
    assert caller.principal == CALLER_OID
    assert caller.limits.tokens_per_minute == 500
    with pytest.raises(Forbidden) as refused:
        await callers.authenticate(entra.mint(now=NOW, oid=random_oid()))
    assert refused.value.status == 403
    assert refused.value.code == "identity_not_allowed"
    with pytest.raises(Unauthorized) as invalid:
        await callers.authenticate(entra.forge_none(now=NOW))
    assert invalid.value.status == 401
    assert invalid.value.code == "invalid_token"


async def test_an_identity_belongs_to_one_subscription_only() -> None:
    admin = SubscriptionAdmin(EmbeddedSubscriptionStore())
    await admin.create({"name": "first", "identities": [CALLER_OID]})
    second = await admin.create({"name": "second"})
    with pytest.raises(Exception, match="already belongs"):
        await admin.update(second["id"], {"identities": [CALLER_OID]})


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    thread = SimulatorThread(SimulatorConfig(name="sim", deployments=("chat",), api_key="sim-key")).start()
    yield thread
    thread.stop()


@pytest.fixture
def entra_gateway(
    gateway_server: Callable[..., GatewayServer], sim: SimulatorThread, entra: EntraTenant
) -> Callable[..., GatewayServer]:
    def start(**env: str) -> GatewayServer:
        settings = settings_for(
            [{"name": "sim", "endpoint": sim.url, "deployments": ["chat"]}],
            GATEWAY_ADMIN_KEY=ADMIN,
            **entra.settings(**env),
        )
        return gateway_server(lambda: Gateway(settings))

    return start


def http(
    gw: GatewayServer, path: str, *, method: str = "POST", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        gw.url + path, data=data, method=method, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def chat(gw: GatewayServer, token: str) -> tuple[int, dict[str, Any]]:
    return http(
        gw,
        "/openai/deployments/chat/chat/completions?api-version=2024-10-21",
        body={"messages": MESSAGES, "max_tokens": 5},
        headers={"authorization": f"Bearer {token}"},
    )


def test_the_openai_sdk_calls_with_an_azure_ad_token_provider(
    entra_gateway: Callable[..., GatewayServer], entra: EntraTenant
) -> None:
    gw = entra_gateway()
    status, created = http(
        gw,
        "/gateway/admin/subscriptions",
        body={"name": "app", "identities": [CALLER_OID]},
        headers={"x-admin-key": ADMIN},
    )
    assert status == 201, created
    client = AzureOpenAI(
        azure_endpoint=gw.url,
        azure_ad_token_provider=lambda: entra.mint(version=1),
        api_version="2024-10-21",
        max_retries=0,
    )
    answer = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    stranger = AzureOpenAI(
        azure_endpoint=gw.url,
        azure_ad_token_provider=lambda: entra.mint(oid=random_oid()),
        api_version="2024-10-21",
        max_retries=0,
    )
    with pytest.raises(PermissionDeniedError) as refused:
        stranger.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    assert refused.value.status_code == 403
    assert refused.value.code == "identity_not_allowed"


def test_every_forged_or_wrong_token_gets_401_in_the_envelope(
    entra_gateway: Callable[..., GatewayServer], entra: EntraTenant
) -> None:
    gw = entra_gateway()
    http(
        gw,
        "/gateway/admin/subscriptions",
        body={"name": "app", "identities": [CALLER_OID]},
        headers={"x-admin-key": ADMIN},
    )
    now = time.time()
    wrong = {
        "expired": entra.mint(now=now - 7200, lifetime=3600),
        "not yet valid": entra.mint(now=now, nbf=int(now + 600)),
        "wrong audience": entra.mint(now=now, aud="api://someone-else"),
        "wrong issuer": entra.mint(now=now, iss="https://login.microsoftonline.com/other/v2.0"),
        "bad signature": entra.mint(SigningKey("key-1"), now=now),
        "unknown key id": entra.mint(SigningKey("key-unknown"), now=now),
        "alg none": entra.forge_none(now=now),
        "hs256 with the public key": entra.forge_hs256(now=now),
    }
    for name, token in wrong.items():
        status, body = chat(gw, token)
        assert status == 401, (name, body)
        assert body["error"]["code"] == "invalid_token", name
        assert set(body["error"]) == {"message", "type", "code", "param"}
    fetches = entra.fetches
    status, _ = chat(gw, wrong["unknown key id"])
    assert status == 401
    assert entra.fetches == fetches
    status, _ = chat(gw, entra.mint(now=now))
    assert status == 200


def test_a_subscription_may_accept_tokens_only(entra_gateway: Callable[..., GatewayServer], entra: EntraTenant) -> None:
    gw = entra_gateway()
    status, created = http(
        gw,
        "/gateway/admin/subscriptions",
        body={"name": "tokens only", "identities": [CALLER_OID], "auth_modes": ["entra"]},
        headers={"x-admin-key": ADMIN},
    )
    assert status == 201
    assert created["auth_modes"] == ["entra"]
    status, body = http(
        gw,
        "/openai/deployments/chat/chat/completions",
        body={"messages": MESSAGES},
        headers={"api-key": created["primary_key"]},
    )
    assert status == 403
    assert body["error"]["code"] == "key_auth_disabled"
    assert chat(gw, entra.mint())[0] == 200
