"""The admin API by Entra app role, the shared key switched off, and the audit trail of every change.

Tokens are minted with a local RSA key and the signing keys served on
127.0.0.1 (tests/fixtures/entra.py); the gateway runs in the local host.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from shared.admin.access import Actor
from shared.admin.audit import AuditTrail
from shared.clock import ManualClock
from shared.config import load_settings
from shared.gateway import Gateway
from shared.stores.factory import Stores, build_stores
from tests.fixtures.azurite import Azurite, unique_prefix
from tests.fixtures.entra import EntraTenant, random_oid
from tests.fixtures.servers import GatewayServer, settings_for
from tests.test_admin import run_cli
from tests.test_entra import http

ADMIN = "test-admin-key"
BACKENDS = [{"name": "b1", "endpoint": "http://127.0.0.1:9", "deployments": ["chat"]}]
ADMIN_OID = random_oid()
READER_OID = random_oid()


@pytest.fixture
def role_gateway(gateway_server: Callable[..., GatewayServer], entra: EntraTenant) -> Callable[..., GatewayServer]:
    def start(**env: str) -> GatewayServer:
        settings = settings_for([dict(b) for b in BACKENDS], **entra.settings(**env))
        return gateway_server(lambda: Gateway(settings))

    return start


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_an_admin_role_token_manages_subscriptions_and_each_change_lands_in_the_audit_trail(
    role_gateway: Callable[..., GatewayServer], entra: EntraTenant
) -> None:
    gw = role_gateway(GATEWAY_ADMIN_KEY=ADMIN)
    admin = bearer(entra.mint(oid=ADMIN_OID, roles=["Gateway.Admin"], name="Ada Admin"))
    status, created = http(
        gw, "/gateway/admin/subscriptions", body={"name": "team", "tokens_per_minute": 10}, headers=admin
    )
    assert status == 201, created
    sub = created["id"]
    assert (
        http(gw, f"/gateway/admin/subscriptions/{sub}", method="PATCH", body={"state": "suspended"}, headers=admin)[0]
        == 200
    )
    status, _ = http(gw, f"/gateway/admin/subscriptions/{sub}/regenerate", body={"key": "secondary"}, headers=admin)
    assert status == 200
    # The shared key still works alongside, and is recorded as such.
    assert http(gw, f"/gateway/admin/subscriptions/{sub}", method="DELETE", headers={"x-admin-key": ADMIN})[0] == 204

    reader = bearer(entra.mint(oid=READER_OID, roles=["Gateway.Reader"]))
    status, trail = http(gw, "/gateway/admin/audit", method="GET", headers=reader)
    assert status == 200
    entries = trail["data"]
    assert [e["action"] for e in entries] == ["delete", "regenerate", "update", "create"]  # newest first
    assert entries[0]["actor"] == "admin-key"
    assert {e["actor"] for e in entries[1:]} == {f"entra:{ADMIN_OID}"}
    assert entries[-1]["actor_name"] == "Ada Admin"
    assert entries[-1]["fields"] == ["name", "tokens_per_minute"]
    assert entries[2]["fields"] == ["state"]
    assert entries[1]["fields"] == ["secondary_key"]
    assert entries[2]["route"] == f"PATCH /gateway/admin/subscriptions/{sub}"
    assert all(e["subscription_id"] == sub for e in entries)
    text = json.dumps(trail)
    assert created["primary_key"] not in text  # never a key
    assert created["secondary_key"] not in text


def test_a_reader_may_look_but_not_change_and_a_token_without_a_role_is_refused(
    role_gateway: Callable[..., GatewayServer], entra: EntraTenant
) -> None:
    gw = role_gateway(GATEWAY_ADMIN_KEY=ADMIN)
    reader = bearer(entra.mint(oid=READER_OID, roles=["Gateway.Reader"]))
    assert http(gw, "/gateway/admin/subscriptions", method="GET", headers=reader)[0] == 200
    assert http(gw, "/gateway/admin/usage", method="GET", headers=reader)[0] == 200
    status, body = http(gw, "/gateway/admin/subscriptions", body={"name": "x"}, headers=reader)
    assert status == 403
    assert body["error"]["code"] == "admin_role_required"
    nobody = bearer(entra.mint(oid=random_oid(), roles=["Something.Else"]))
    assert http(gw, "/gateway/admin/subscriptions", method="GET", headers=nobody)[0] == 403
    for forged in (entra.forge_none(roles=["Gateway.Admin"]), entra.forge_hs256(roles=["Gateway.Admin"])):
        status, body = http(gw, "/gateway/admin/subscriptions", body={"name": "x"}, headers=bearer(forged))
        assert status == 401
        assert body["error"]["code"] == "invalid_token"
    status, trail = http(gw, "/gateway/admin/audit", method="GET", headers={"x-admin-key": ADMIN})
    assert status == 200
    assert trail["data"] == []  # nothing was changed
    # A limit out of range is refused, not quietly clamped.
    for bad in ("-5", "0", "1001", "ten"):
        status, body = http(gw, f"/gateway/admin/audit?limit={bad}", method="GET", headers={"x-admin-key": ADMIN})
        assert (status, body["error"]["param"]) == (400, "limit"), bad


def test_the_shared_admin_key_can_be_switched_off(
    role_gateway: Callable[..., GatewayServer], entra: EntraTenant
) -> None:
    gw = role_gateway(GATEWAY_ADMIN_KEY=ADMIN, GATEWAY_ADMIN_KEY_ENABLED="false")
    status, body = http(gw, "/gateway/admin/subscriptions", method="GET", headers={"x-admin-key": ADMIN})
    assert status == 401
    assert body["error"]["code"] == "admin_key_disabled"
    status, body = http(gw, "/gateway/admin/subscriptions", method="GET")
    assert status == 401
    assert "Gateway.Admin" in body["error"]["message"]
    admin = bearer(entra.mint(oid=ADMIN_OID, roles=["Gateway.Admin"]))
    assert http(gw, "/gateway/admin/subscriptions", method="GET", headers=admin)[0] == 200


def test_without_an_admin_key_the_admin_api_is_on_for_roles_only(
    role_gateway: Callable[..., GatewayServer], entra: EntraTenant
) -> None:
    gw = role_gateway()
    assert http(gw, "/gateway/admin/subscriptions", method="GET", headers={"x-admin-key": "guess"})[0] == 401
    admin = bearer(entra.mint(oid=ADMIN_OID, roles=["Gateway.Admin"]))
    assert http(gw, "/gateway/admin/subscriptions", body={"name": "t"}, headers=admin)[0] == 201


# --- the audit store, both implementations ----------------------------------------------------


@pytest.fixture(params=["embedded", pytest.param("tables", marks=pytest.mark.azurite)])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    env = {"GATEWAY_BACKENDS": json.dumps(BACKENDS)}
    if request.param == "tables":
        azurite = request.getfixturevalue("azurite")
        env |= {"GATEWAY_STORAGE": azurite.connection_string, "GATEWAY_TABLE_PREFIX": unique_prefix()}
    built = build_stores(load_settings(env))
    yield built
    await built.close()


async def test_the_audit_store_returns_entries_newest_first_and_by_subscription(stores: Stores) -> None:
    clock = ManualClock()
    trail = AuditTrail(stores.audit, clock)
    actor = Actor("entra:x", name="Ada", app_id="app")
    for i, sub in enumerate(("sub-a", "sub-b", "sub-a", "sub-a")):
        await trail.record(actor, "update", f"PATCH /x/{i}", sub, [f"f{i}"])
        clock.advance(0.0005 if i == 1 else 1)  # entries a fraction of a millisecond apart keep their order
    everything = await trail.recent()
    assert [e["route"] for e in everything] == ["PATCH /x/3", "PATCH /x/2", "PATCH /x/1", "PATCH /x/0"]
    assert everything[0]["actor_name"] == "Ada"
    assert everything[0]["app_id"] == "app"
    assert [e["fields"] for e in await trail.recent(2, "sub-a")] == [["f3"], ["f2"]]


@pytest.mark.azurite
def test_the_command_line_writes_and_shows_the_audit_trail(azurite: Azurite) -> None:
    env = {"GATEWAY_STORAGE": azurite.connection_string, "GATEWAY_TABLE_PREFIX": unique_prefix()}
    created = run_cli("create", "--name", "ops", "--tpm", "5000", env=env)
    run_cli("update", created["id"], "--state", "suspended", env=env)
    trail: dict[str, Any] = run_cli("audit", "--limit", "10", env=env)
    assert [(e["action"], e["fields"]) for e in trail["data"]] == [
        ("update", ["state"]),
        ("create", ["name", "tokens_per_minute"]),
    ]
    assert trail["data"][0]["actor"].startswith("cli:")


def test_metrics_take_a_reader_role_token_as_the_dashboard_sends_it(
    role_gateway: Callable[..., GatewayServer], entra: EntraTenant
) -> None:
    gw = role_gateway(GATEWAY_ADMIN_KEY=ADMIN, GATEWAY_METRICS_ENDPOINT="true")
    reader = bearer(entra.mint(oid=READER_OID, roles=["Gateway.Reader"]))
    request = urllib.request.Request(gw.url + "/metrics", headers=reader)
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
    nobody = bearer(entra.mint(oid=random_oid(), roles=[]))
    assert http(gw, "/metrics", method="GET", headers=nobody)[0] == 403
