"""Hostile and malformed input: every one a 4xx in the envelope, nothing reserved and left open, nothing echoed big.

Served by the local Functions host over real HTTP with a simulator backend,
as a caller meets the gateway.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from shared import pipeline
from shared.admin.subscriptions import SubscriptionAdmin
from shared.gateway import Gateway
from shared.models import GatewayRequest
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.servers import GatewayServer, settings_for

ADMIN = "bad-input-admin-key"
CHAT = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(name="a", deployments=("chat", "embed"), api_key="sim-key")) as running:
        yield running


@pytest.fixture
def gw(sim: SimulatorThread, gateway_server: Callable[..., GatewayServer]) -> GatewayServer:
    settings = settings_for(
        [{"name": "a", "endpoint": sim.url, "deployments": ["chat", "embed"]}], GATEWAY_ADMIN_KEY=ADMIN
    )
    return gateway_server(lambda: Gateway(settings))


def call(
    gw: GatewayServer,
    path: str,
    *,
    method: str = "POST",
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(gw.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def envelope(raw: bytes) -> dict[str, Any]:
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error  # type: ignore[no-any-return]


def admin(gw: GatewayServer, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, _, raw = call(gw, f"/gateway/admin/{path}", method=method, body=body, headers={"x-admin-key": ADMIN})
    return status, json.loads(raw) if raw else None


def subscription(gw: GatewayServer, **limits: Any) -> str:
    status, created = admin(gw, "POST", "subscriptions", {"name": "fuzzed", **limits})
    assert status == 201, created
    return str(created["primary_key"])


def open_reservations(gw: GatewayServer) -> int:
    return int(admin(gw, "GET", "stats")[1]["limits"]["open_reservations"])


def deep(levels: int) -> bytes:
    return ('{"messages": [{"role": "user", "content": ' + "[" * levels + "]" * levels + "}]}").encode()


BAD_BODIES: list[tuple[bytes, str | None]] = [
    (b"{", None),
    (b"[]", None),
    (deep(1_000), None),
    (deep(100_000), None),
    (rb'{"messages": [{"role": "user", "content": "\ud800"}]}', None),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}', None),
    (json.dumps({"messages": MESSAGES, "stream": True, "stream_options": "x"}).encode(), "stream_options"),
    (json.dumps({"messages": MESSAGES, "stream": True, "stream_options": [1]}).encode(), "stream_options"),
    (json.dumps({"messages": MESSAGES, "stream_options": {"include_usage": "yes"}}).encode(), "stream_options"),
    (json.dumps({"messages": MESSAGES, "stream": "true"}).encode(), "stream"),
    (json.dumps({"messages": "hi"}).encode(), "messages"),
    (json.dumps({"messages": [{"role": ["user"], "content": "hi"}]}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), "messages"),
    (json.dumps({"messages": MESSAGES, "max_tokens": 10**30}).encode(), "max_tokens"),
    (json.dumps({"messages": MESSAGES, "max_tokens": 1.5}).encode(), "max_tokens"),
    (json.dumps({"messages": MESSAGES, "n": 0}).encode(), "n"),
    (json.dumps({"messages": MESSAGES, "model": {"x": 1}}).encode(), "model"),
    (json.dumps({"messages": MESSAGES, "user": {"id": 1}}).encode(), "user"),
    (json.dumps({"messages": MESSAGES, "user": 42}).encode(), "user"),
]


def test_bad_bodies_are_400s_in_the_envelope_and_no_reservation_is_left_open(gw: GatewayServer) -> None:
    key = subscription(gw, tokens_per_minute=1_000_000, token_quota=10_000_000, token_quota_period="monthly")
    headers = {"api-key": key, "content-type": "application/json"}
    ok, _, _ = call(gw, CHAT, body={"messages": MESSAGES, "max_tokens": 5}, headers=headers)
    assert ok == 200  # a lease is held now: a reservation leaked from it would show in /usage
    before = json.loads(call(gw, "/usage", method="GET", headers=headers)[2])["limits"]
    for body, param in BAD_BODIES:
        status, _, raw = call(gw, CHAT, body=body, headers=headers)
        assert status == 400, (body[:80], raw[:300])
        error = envelope(raw)
        if param is not None:
            assert error["param"] == param, (body[:80], error)
        else:
            assert error["code"] == "invalid_json", (body[:80], error)
    embeddings = "/openai/deployments/embed/embeddings"
    for value in ([], [1, "a"], [[]], {"a": 1}, 5, ""):
        status, _, raw = call(gw, embeddings, body={"input": value}, headers=headers)
        assert status == 400
        assert envelope(raw)["param"] == "input"
    after = json.loads(call(gw, "/usage", method="GET", headers=headers)[2])["limits"]
    assert after["tokens_per_minute"]["remaining"] == before["tokens_per_minute"]["remaining"]
    assert open_reservations(gw) == 0


def test_a_failure_inside_the_pipeline_is_an_envelope_and_still_settles_the_reservation(sim: SimulatorThread) -> None:
    import asyncio

    async def scenario() -> None:
        gateway = Gateway(settings_for([{"name": "a", "endpoint": sim.url, "deployments": ["chat"]}]))
        key = "pipeline-bug-key-0123456789"
        await SubscriptionAdmin(gateway.stores.subscriptions).create(
            {"name": "bug", "tokens_per_minute": 100_000}, primary_key=key
        )

        async def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("a bug after the reservation")

        gateway.proxy.forward = broken  # type: ignore[method-assign]
        request = GatewayRequest(
            "POST",
            CHAT.split("?", maxsplit=1)[0],
            {"api-key": key},
            {},
            json.dumps({"messages": MESSAGES}).encode(),
            "rid-bug-1",
        )
        response = await pipeline.handle(gateway, request)
        assert response.status == 500
        assert json.loads(response.body)["error"]["code"] == "internal_error"
        assert gateway.limiter.stats()["open_reservations"] == 0
        assert gateway.limiter.stats()["admitted"] == 1
        await gateway.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "expires_at", [1e300, "1e300", "NaN", "nan", "inf", "-inf", "Infinity", -5, 0, "9999-12-31T23:59:59-23:59"]
)
def test_an_expiry_out_of_range_is_a_400_and_nothing_is_stored(gw: GatewayServer, expires_at: Any) -> None:
    status, answer = admin(gw, "POST", "subscriptions", {"name": "x", "expires_at": expires_at})
    assert status == 400
    assert answer["error"]["param"] == "expires_at"
    assert admin(gw, "GET", "subscriptions")[1]["data"] == []


def test_a_record_stored_with_a_bad_expiry_does_not_break_the_listing(gw: GatewayServer) -> None:
    key = subscription(gw)
    listed = admin(gw, "GET", "subscriptions")[1]["data"]
    sub_id = listed[0]["id"]
    assert gw.gateway is not None
    store = gw.gateway.stores.subscriptions
    for bad in (float("nan"), 1e300, float("inf")):  # as written before expiries were checked
        gw.run(store.modify(sub_id, lambda s, bad=bad: replace(s, expires_at=bad)))
        status, answer = admin(gw, "GET", "subscriptions")
        assert status == 200
        assert answer["data"][0]["expires_at"] is None
        assert answer["data"][0]["invalid_fields"] == ["expires_at"]
        assert admin(gw, "GET", f"subscriptions/{sub_id}")[0] == 200
    gw.gateway.authenticator.forget()
    status, _, raw = call(gw, CHAT, body={"messages": MESSAGES}, headers={"api-key": key})
    assert status == 403  # an expiry that is no instant counts as expired, never as forever
    assert envelope(raw)["code"] == "subscription_expired"
    assert admin(gw, "PATCH", f"subscriptions/{sub_id}", {"expires_at": None})[0] == 200


@pytest.mark.parametrize(
    "query",
    ["from=nan", "to=inf", "from=1e18&to=2e18", "from=-1e18", "from=2000-01-01&to=2199-01-01", "to=NaN"],
)
def test_usage_ranges_out_of_bounds_are_400s(gw: GatewayServer, query: str) -> None:
    status, _, raw = call(gw, f"/gateway/admin/usage?{query}", method="GET", headers={"x-admin-key": ADMIN})
    assert status == 400, raw
    assert envelope(raw)["param"] in ("from", "to")


def test_deep_json_is_a_400_on_the_admin_routes_too(gw: GatewayServer) -> None:
    for path in ("subscriptions", "subscriptions/sub-x", "subscriptions/sub-x/regenerate"):
        method = "PATCH" if path == "subscriptions/sub-x" else "POST"
        status, _, raw = call(
            gw, f"/gateway/admin/{path}", method=method, body=deep(50_000), headers={"x-admin-key": ADMIN}
        )
        assert status == 400, (path, raw[:200])
        assert envelope(raw)["code"] == "invalid_json"


def test_a_huge_or_multiline_name_is_never_echoed_whole(gw: GatewayServer) -> None:
    key = subscription(gw)
    for model in ("a\nforged line", "m" * 256):
        status, _, raw = call(
            gw, "/v1/chat/completions", body={"model": model, "messages": MESSAGES}, headers={"api-key": key}
        )
        assert status == 404
        assert len(raw) < 600
        assert "\n" not in envelope(raw)["message"]
    status, _, raw = call(
        gw, "/gateway/admin/subscriptions/" + "s" * 6_000, method="GET", headers={"x-admin-key": ADMIN}
    )
    assert status == 404
    assert len(raw) < 600


@pytest.mark.parametrize(
    ("method", "status", "code"),
    [
        ("TRACE", 405, "method_not_allowed"),
        ("PROPFIND", 405, "method_not_allowed"),
        ("CONNECTX", 400, "malformed_request"),  # not an HTTP method httptools knows: refused while parsing
    ],
)
def test_methods_the_host_does_not_route_get_the_envelope(
    gw: GatewayServer, method: str, status: int, code: str
) -> None:
    for path in ("/v1/chat/completions", "/health", "/nowhere"):
        got, headers, raw = call(gw, path, method=method)
        assert got == status, (method, path)
        assert headers["content-type"] == "application/json"
        assert envelope(raw)["code"] == code


def _raw_http(gw: GatewayServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_http_gets_a_400_envelope(gw: GatewayServer, request_bytes: bytes) -> None:
    answer = _raw_http(gw, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "malformed_request"


class _PlainTextBackend(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status = 413
        body = b"Request Entity Too Large"
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_a_backends_plain_text_error_becomes_the_envelope_with_its_status(
    gateway_server: Callable[..., GatewayServer],
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainTextBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        settings = settings_for(
            [{"name": "plain", "endpoint": url, "deployments": ["chat"]}], GATEWAY_DEMO_KEY="k" * 24
        )
        gw = gateway_server(lambda: Gateway(settings))
        status, headers, raw = call(gw, CHAT, body={"messages": MESSAGES}, headers={"api-key": "k" * 24})
        assert status == 413
        assert headers["content-type"] == "application/json"
        error = envelope(raw)
        assert error["code"] == "backend_413"
        assert "Request Entity Too Large" in error["message"]
    finally:
        server.shutdown()
        server.server_close()


def test_the_per_operation_body_limit_applies_before_forwarding(
    sim: SimulatorThread, gateway_server: Callable[..., GatewayServer]
) -> None:
    key = "body-limit-key-0123456789"
    settings = settings_for(
        [{"name": "a", "endpoint": sim.url, "deployments": ["chat", "embed"]}],
        GATEWAY_DEMO_KEY=key,
        GATEWAY_BODY_LIMITS='{"embeddings": 2048}',
    )
    gw = gateway_server(lambda: Gateway(settings))
    sim.clear_requests()
    big_chat = {"messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    status, _, raw = call(gw, CHAT, body=big_chat, headers={"api-key": key})
    assert status == 413
    assert envelope(raw)["code"] == "payload_too_large"
    status, _, raw = call(
        gw, "/openai/deployments/embed/embeddings", body={"input": "y" * 4096}, headers={"api-key": key}
    )
    assert status == 413
    status, _, _ = call(
        gw, CHAT, body={"messages": [{"role": "user", "content": "y" * 4096}]}, headers={"api-key": key}
    )
    assert status == 200  # the chat limit is its own
    assert len([r for r in sim.requests() if "embeddings" in str(r["path"])]) == 0


def test_the_openapi_description_is_served_and_names_every_route(gw: GatewayServer) -> None:
    status, headers, raw = call(gw, "/openapi.json", method="GET")
    assert status == 200
    assert headers["content-type"] == "application/json"
    spec = json.loads(raw)
    assert spec["openapi"].startswith("3.")
    for path in (
        "/v1/chat/completions",
        "/openai/deployments/{deployment}/embeddings",
        "/usage",
        "/health",
        "/metrics",
        "/gateway/admin/subscriptions/{id}",
        "/gateway/admin/usage",
        "/openapi.json",
    ):
        assert path in spec["paths"], path
