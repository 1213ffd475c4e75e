"""The admin API over real HTTP (embedded and Table Storage stores), the operator command line, and `make run`'s demo.

Whether a key authenticates is observed through the proxy route itself: a
valid key asking for an unknown deployment gets 404, an invalid one 401, so
no backend is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from shared.gateway import Gateway
from tests.fixtures.azurite import ROOT, Azurite, unique_prefix
from tests.fixtures.servers import GatewayServer, settings_for

ADMIN_KEY = "admin-test-key-0123456789"
BACKENDS = [{"name": "b1", "endpoint": "http://127.0.0.1:9", "deployments": ["gpt-4o-mini"]}]


class Admin:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(self, method: str, path: str, body: Any = None, key: str = ADMIN_KEY) -> tuple[int, Any]:
        headers = {"x-admin-key": key} if key else {}
        async with self.session.request(method, f"{self.url}/gateway/admin/{path}", json=body, headers=headers) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None

    async def key_status(self, key: str) -> int:
        """401 for a key that does not authenticate; 404 (unknown deployment) for one that does."""
        async with self.session.post(
            f"{self.url}/openai/deployments/no-such-deployment/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers={"api-key": key},
        ) as r:
            return r.status


@pytest.fixture(params=["embedded", pytest.param("tables", marks=pytest.mark.azurite)])
async def admin(request: pytest.FixtureRequest, gateway_server: Callable[..., GatewayServer]) -> AsyncIterator[Admin]:
    env = {"GATEWAY_ADMIN_KEY": ADMIN_KEY}
    if request.param == "tables":
        azurite: Azurite = request.getfixturevalue("azurite")
        env |= {"GATEWAY_STORAGE": azurite.connection_string, "GATEWAY_TABLE_PREFIX": unique_prefix()}
    settings = settings_for([dict(b) for b in BACKENDS], **env)
    server = gateway_server(lambda: Gateway(settings))
    async with aiohttp.ClientSession() as session:
        yield Admin(session, server.url)


async def test_create_answers_201_with_both_keys_once_and_they_work(admin: Admin) -> None:
    status, created = await admin.call(
        "POST",
        "subscriptions",
        {"name": "team-a", "tokens_per_minute": 60000, "requests_per_minute": 300, "token_quota": 10**6,
         "token_quota_period": "monthly", "allowed_deployments": ["gpt-4o-mini"]},
    )  # fmt: skip
    assert status == 201
    assert created["id"].startswith("sub-")
    assert created["primary_key"] != created["secondary_key"]
    assert await admin.key_status(created["primary_key"]) == 404
    assert await admin.key_status(created["secondary_key"]) == 404
    assert await admin.key_status("gw-not-a-key") == 401
    status, shown = await admin.call("GET", f"subscriptions/{created['id']}")
    assert status == 200
    assert shown["token_quota_period"] == "monthly"
    assert "primary_key" not in shown
    assert not any("hash" in k for k in shown)
    status, listed = await admin.call("GET", "subscriptions")
    assert [s["id"] for s in listed["data"]] == [created["id"]]
    assert created["primary_key"] not in json.dumps(listed)


async def test_patch_changes_limits_and_suspends(admin: Admin) -> None:
    _, created = await admin.call("POST", "subscriptions", {"name": "team-b"})
    status, updated = await admin.call("PATCH", f"subscriptions/{created['id']}", {"tokens_per_minute": 1000})
    assert status == 200
    assert updated["tokens_per_minute"] == 1000
    status, updated = await admin.call("PATCH", f"subscriptions/{created['id']}", {"state": "suspended"})
    assert updated["state"] == "suspended"
    assert updated["tokens_per_minute"] == 1000  # untouched fields stay
    assert await admin.key_status(created["primary_key"]) == 403


async def test_regenerating_a_key_replaces_only_that_key(admin: Admin) -> None:
    _, created = await admin.call("POST", "subscriptions", {"name": "team-c"})
    status, regenerated = await admin.call("POST", f"subscriptions/{created['id']}/regenerate", {"key": "secondary"})
    assert status == 200
    assert set(regenerated) == {"id", "secondary_key"}
    assert await admin.key_status(created["secondary_key"]) == 401
    assert await admin.key_status(regenerated["secondary_key"]) == 404
    assert await admin.key_status(created["primary_key"]) == 404


async def test_delete_removes_the_subscription(admin: Admin) -> None:
    _, created = await admin.call("POST", "subscriptions", {"name": "team-d"})
    assert (await admin.call("DELETE", f"subscriptions/{created['id']}"))[0] == 204
    assert await admin.key_status(created["primary_key"]) == 401
    status, body = await admin.call("GET", f"subscriptions/{created['id']}")
    assert status == 404
    assert body["error"]["code"] == "subscription_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "x", "tokens_per_minute": 0}, "tokens_per_minute"),
        ({"name": "x", "token_quota": 5}, "token_quota_period"),
        ({"name": "x", "token_quota": 5, "token_quota_period": "yearly"}, "token_quota_period"),
        ({"name": "x", "state": "cancelled"}, "state"),
        ({"name": "x", "expires_at": "soon"}, "expires_at"),
    ],
)
async def test_invalid_fields_are_refused_with_400_naming_the_field(
    admin: Admin, body: dict[str, Any], param: str
) -> None:
    status, answer = await admin.call("POST", "subscriptions", body)
    assert status == 400
    assert answer["error"]["param"] == param


async def test_the_admin_api_needs_the_admin_key(admin: Admin) -> None:
    for key in ("", "wrong"):
        status, body = await admin.call("GET", "subscriptions", key=key)
        assert status == 401
        assert body["error"]["code"] == "invalid_admin_key"


async def test_stats_show_storage_transactions_and_limit_counters(admin: Admin) -> None:
    await admin.call("POST", "subscriptions", {"name": "team-e"})
    status, stats = await admin.call("GET", "stats")
    assert status == 200
    assert stats["limits"]["kind"] == "shared"
    assert stats["limits"]["shared"] is True
    if stats["storage"]["kind"] == "tables":
        assert stats["storage"]["transactions"] > 0
    assert (await admin.call("POST", "stats"))[0] == 405


async def test_the_admin_api_is_off_without_an_admin_key(gateway_server: Callable[..., GatewayServer]) -> None:
    settings = settings_for([dict(b) for b in BACKENDS])
    server = gateway_server(lambda: Gateway(settings))
    async with aiohttp.ClientSession() as session:
        status, body = await Admin(session, server.url).call("GET", "subscriptions")
    assert status == 404
    assert body["error"]["code"] == "admin_disabled"


async def test_make_runs_demo_subscription_is_created_through_the_same_path(
    gateway_server: Callable[..., GatewayServer],
) -> None:
    settings = settings_for([dict(b) for b in BACKENDS], GATEWAY_DEMO_KEY="gw-demo-key-for-tests-0123456789")
    server = gateway_server(lambda: Gateway(settings))
    async with aiohttp.ClientSession() as session:
        admin = Admin(session, server.url)
        assert await admin.key_status("gw-demo-key-for-tests-0123456789") == 404
    assert server.gateway is not None
    subscriptions = server.run(server.gateway.stores.subscriptions.list())
    assert [s.name for s in subscriptions] == ["demo"]


def run_cli(*args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "shared.admin", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.azurite
def test_the_command_line_manages_subscriptions_in_table_storage(azurite: Azurite) -> None:
    env = {"GATEWAY_STORAGE": azurite.connection_string, "GATEWAY_TABLE_PREFIX": unique_prefix()}
    created = run_cli("create", "--name", "ops", "--tpm", "5000", "--token-quota", "9000",
                      "--token-quota-period", "weekly", env=env)  # fmt: skip
    assert created["primary_key"].startswith("gw-")
    assert run_cli("show", created["id"], env=env)["tokens_per_minute"] == 5000
    updated = run_cli("update", created["id"], "--tpm", "none", "--state", "suspended", env=env)
    assert (updated["tokens_per_minute"], updated["state"]) == (None, "suspended")
    assert set(run_cli("regenerate", created["id"], "--key", "secondary", env=env)) == {"id", "secondary_key"}
    assert [s["id"] for s in run_cli("list", env=env)["data"]] == [created["id"]]
    assert run_cli("delete", created["id"], env=env) == {"deleted": created["id"]}
    assert run_cli("list", env=env)["data"] == []


def test_the_command_line_drives_a_running_gateway(gateway_server: Callable[..., GatewayServer]) -> None:
    settings = settings_for([dict(b) for b in BACKENDS], GATEWAY_ADMIN_KEY=ADMIN_KEY)
    server = gateway_server(lambda: Gateway(settings))
    env = {"GATEWAY_ADMIN_KEY": ADMIN_KEY}
    created = run_cli("--url", server.url, "create", "--name", "remote", "--rpm", "60", env=env)
    assert created["requests_per_minute"] == 60
    assert run_cli("--url", server.url, "list", env=env)["data"][0]["name"] == "remote"
    backends = run_cli("--url", server.url, "backends", env=env)
    assert [row["backend"] for row in backends["data"]] == ["b1"]
    assert "storage" in run_cli("--url", server.url, "stats", env=env)
