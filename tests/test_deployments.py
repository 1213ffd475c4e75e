"""The model list (`shared/deployments.py`) through the local host, read by the real `openai` SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from shared.gateway import Gateway
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.servers import GatewayServer, settings_for

KEY = "test-subscription-key-models-0123456789"
ADMIN = "test-admin-key"


@pytest.fixture
def gw(gateway_server: Callable[..., GatewayServer]) -> Iterator[GatewayServer]:
    sim = SimulatorThread(SimulatorConfig(name="a", deployments=("chat", "embed"), api_key="sim-key")).start()
    backends: list[dict[str, Any]] = [
        {"name": "a", "endpoint": sim.url, "deployments": {"chat": "chat", "embed": "embed"}},
        {"name": "b", "endpoint": sim.url, "priority": 2, "deployments": {"gpt-4o": "chat"}},
    ]
    settings = settings_for(backends, GATEWAY_DEMO_KEY=KEY, GATEWAY_ADMIN_KEY=ADMIN)
    yield gateway_server(lambda: Gateway(settings))
    sim.stop()


def client(gw: GatewayServer, base: str = "/v1", key: str = KEY) -> OpenAI:
    return OpenAI(base_url=gw.url + base, api_key=key, max_retries=0)


def admin(gw: GatewayServer, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        gw.url + "/gateway/admin/" + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"x-admin-key": ADMIN, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def test_list_shows_every_configured_deployment_in_the_sdk_shape(gw: GatewayServer) -> None:
    for base in ("/v1", "/openai/v1", "/openai"):
        models = list(client(gw, base).models.list())
        assert [m.id for m in models] == ["chat", "embed", "gpt-4o"]
        assert all(m.object == "model" and m.owned_by == "gateway" and m.created == 0 for m in models)


def test_retrieve_one_and_404_for_an_unknown_one(gw: GatewayServer) -> None:
    assert client(gw).models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as info:
        client(gw).models.retrieve("no-such-model")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_a_subscription_sees_only_the_deployments_it_may_use(gw: GatewayServer) -> None:
    created = admin(gw, "POST", "subscriptions", {"name": "narrow", "allowed_deployments": ["chat"]})
    narrow = client(gw, key=created["primary_key"])
    assert [m.id for m in narrow.models.list()] == ["chat"]
    assert narrow.models.retrieve("chat").id == "chat"
    with pytest.raises(openai.NotFoundError) as info:  # the same answer as for a name that does not exist
        narrow.models.retrieve("embed")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_the_list_needs_a_valid_key_and_get(gw: GatewayServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gw, key="wrong-key").models.list()
    request = urllib.request.Request(gw.url + "/v1/models", data=b"{}", method="POST", headers={"api-key": KEY})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 405
    assert json.loads(info.value.read())["error"]["code"] == "method_not_allowed"
