"""End to end: the official `openai` SDK through the local Functions host over HTTP, simulator backends behind it.

Failures are scripted on the simulators (down, 500s, 429 with Retry-After,
slow first byte, a connection dropped mid-stream); time moves by hand.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai import AzureOpenAI, OpenAI

from devtools.ports import free_port
from shared.clock import ManualClock
from shared.gateway import Gateway
from simulator import SimulatorThread
from tests.fixtures.servers import DEMO_ADMIN_KEY as ADMIN
from tests.fixtures.servers import DEMO_KEY as KEY
from tests.fixtures.servers import GatewayServer, backend, settings_for

MESSAGES = [{"role": "user", "content": "Tell me about load balancing"}]


def azure(gw: GatewayServer) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=gw.url, api_key=KEY, api_version="2024-10-21", max_retries=0)


def raw(
    gw: GatewayServer,
    path: str,
    *,
    method: str = "POST",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(gw.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"{}")


def calls(sim: SimulatorThread) -> int:
    return len([r for r in sim.requests() if "/openai/deployments/" in str(r["path"])])


# --- the happy paths ------------------------------------------------------------------------


def test_chat_through_both_sdk_shapes(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    sim = sims("a")
    gw = demo_gateway([backend("a", sim.url)])
    response = azure(gw).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    completion = response.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert response.headers["x-gateway-backend"] == "a"
    assert response.headers["x-request-id"]
    v1 = OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    assert v1.chat.completions.create(model="chat", messages=MESSAGES).choices[0].message.content
    openai_prefixed = OpenAI(base_url=gw.url + "/openai/v1", api_key=KEY, max_retries=0)
    assert openai_prefixed.chat.completions.create(model="chat", messages=MESSAGES).choices[0].message.content


def test_stream_hides_the_usage_chunk_it_asked_for(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    sim = sims("a")
    gw = demo_gateway([backend("a", sim.url)])
    chunks = list(azure(gw).chat.completions.create(model="chat", messages=MESSAGES, stream=True, max_tokens=6))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)  # the caller did not ask for usage
    sent = sim.requests()[-1]["body"]
    assert isinstance(sent, dict)
    assert sent["stream_options"] == {"include_usage": True}  # but the gateway asked the backend for it


def test_stream_keeps_the_usage_chunk_when_the_caller_asks(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    chunks = list(
        azure(gw).chat.completions.create(
            model="chat", messages=MESSAGES, stream=True, max_tokens=6, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


def test_embeddings(sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    result = azure(gw).embeddings.create(model="embed", input=["one", "two"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) > 0


def test_caller_credentials_never_reach_a_backend(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    sim = sims("a")
    gw = demo_gateway([backend("a", sim.url)])
    status, headers, _ = raw(
        gw,
        "/openai/deployments/chat/chat/completions?api-version=2024-10-21",
        body=json.dumps({"messages": MESSAGES}).encode(),
        headers={
            "Ocp-Apim-Subscription-Key": KEY,
            "Authorization": "Bearer something-else",
            "Cookie": "session=1",
            "x-request-id": "caller-chosen-id-42",
            "content-type": "application/json",
        },
    )
    assert status == 200
    assert headers["x-request-id"] == "caller-chosen-id-42"
    seen = sim.requests()[-1]["headers"]
    assert isinstance(seen, dict)
    assert seen["api-key"] == "sim-key"  # the gateway's own credential
    for header in ("authorization", "ocp-apim-subscription-key", "cookie"):
        assert header not in seen
    assert KEY not in json.dumps(seen)
    assert seen["x-ms-client-request-id"] == "caller-chosen-id-42"


# --- failover -------------------------------------------------------------------------------


def test_failover_when_the_primary_is_down_or_refuses_connections(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    down, spare = sims("down"), sims("spare")
    down.set_faults(down=True)
    closed_port = f"http://127.0.0.1:{free_port()}"
    gw = demo_gateway(
        [backend("down", down.url), backend("refused", closed_port), backend("spare", spare.url, priority=2)]
    )
    for _ in range(3):
        response = azure(gw).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        assert response.headers["x-gateway-backend"] == "spare"


def test_failover_on_500s_and_the_caller_sees_no_error(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    bad, good = sims("bad"), sims("good")
    bad.set_faults(error_rate=1.0, error_status=500)
    gw = demo_gateway([backend("bad", bad.url), backend("good", good.url, priority=2)])
    for _ in range(4):
        response = azure(gw).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        assert response.headers["x-gateway-backend"] == "good"


def test_throttled_backend_is_not_called_again_before_its_retry_after(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    busy, spare = sims("busy"), sims("spare")
    busy.set_faults(throttle_rate=1.0, retry_after=30, count=1)
    clock = ManualClock()
    gw = demo_gateway([backend("busy", busy.url), backend("spare", spare.url, priority=2)], clock=clock)
    client = azure(gw)
    first = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert first.headers["x-gateway-backend"] == "spare"  # the 429 never reached the caller
    assert calls(busy) == 1
    clock.advance(29)
    for _ in range(3):
        assert (
            client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES).headers[
                "x-gateway-backend"
            ]
            == "spare"
        )
    assert calls(busy) == 1  # still cooling down
    clock.advance(2)
    again = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert again.headers["x-gateway-backend"] == "busy"
    assert calls(busy) == 2


def test_every_backend_throttled_answers_429_with_the_smallest_retry_after(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    a, b = sims("a"), sims("b")
    a.set_faults(throttle_rate=1.0, retry_after=20)
    b.set_faults(throttle_rate=1.0, retry_after=5)
    gw = demo_gateway([backend("a", a.url), backend("b", b.url, priority=2)])
    with pytest.raises(openai.RateLimitError) as info:
        azure(gw).chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "5"
    assert info.value.body["code"] == "backends_throttled"  # type: ignore[index]
    # While both cool down, the gateway answers 429 without calling them.
    before = calls(a) + calls(b)
    with pytest.raises(openai.RateLimitError):
        azure(gw).chat.completions.create(model="chat", messages=MESSAGES)
    assert calls(a) + calls(b) == before


def test_timeout_before_first_byte_fails_over(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    slow, fast = sims("slow"), sims("fast")
    slow.set_faults(slow_first_byte_ms=3000)
    gw = demo_gateway([backend("slow", slow.url, timeouts={"first_byte": 0.3}), backend("fast", fast.url, priority=2)])
    response = azure(gw).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert response.headers["x-gateway-backend"] == "fast"
    chunks = list(azure(gw).chat.completions.create(model="chat", messages=MESSAGES, stream=True))
    assert chunks


def test_caller_errors_pass_through_and_are_not_retried(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    a, b = sims("a"), sims("b")
    gw = demo_gateway([backend("a", a.url), backend("b", b.url, priority=2)])
    with pytest.raises(openai.BadRequestError) as info:
        azure(gw).chat.completions.create(model="chat", messages=[{"role": "user", "content": "[[content_filter]]"}])
    assert info.value.body["code"] == "content_filter"  # type: ignore[index]
    assert calls(b) == 0


def test_breaker_opens_then_half_opens_and_closes(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    flaky, spare = sims("flaky"), sims("spare")
    flaky.set_faults(error_rate=1.0, error_status=503, count=2)
    clock = ManualClock()
    gw = demo_gateway(
        [backend("flaky", flaky.url), backend("spare", spare.url, priority=2)],
        clock=clock,
        GATEWAY_BREAKER='{"mode": "count", "failures": 2, "interval_seconds": 10, "trip_seconds": 30}',
    )
    client = azure(gw)

    def served_by() -> str:
        return str(
            client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES).headers[
                "x-gateway-backend"
            ]
        )

    assert [served_by(), served_by()] == ["spare", "spare"]  # two failures on flaky: its breaker opens
    status, _, report = raw(gw, "/gateway/admin/backends", method="GET", headers={"x-admin-key": ADMIN})
    assert status == 200
    row = next(r for r in report["data"] if r["backend"] == "flaky" and r["deployment"] == "chat")
    assert row["breaker"] == "open"
    assert calls(flaky) == 2
    assert served_by() == "spare"
    assert calls(flaky) == 2  # open: not even tried
    clock.advance(31)
    assert served_by() == "flaky"  # the half-open trial succeeds (its faults are spent)...
    assert served_by() == "flaky"  # ...and closes the breaker
    _, _, report = raw(gw, "/gateway/admin/backends", method="GET", headers={"x-admin-key": ADMIN})
    row = next(r for r in report["data"] if r["backend"] == "flaky" and r["deployment"] == "chat")
    assert row["breaker"] == "closed"
    assert row["trips"] == 1


def test_backend_failing_mid_stream_ends_the_stream_with_an_error(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    sim = sims("a")
    sim.set_faults(drop_mid_stream_after=3)
    gw = demo_gateway([backend("a", sim.url)])
    stream = azure(gw).chat.completions.create(model="chat", messages=MESSAGES, stream=True, max_tokens=20)
    received = []

    def drain() -> None:
        received.extend(stream)

    with pytest.raises(openai.APIError, match=r"failed while streaming|ended the stream"):
        drain()
    assert received  # the first events arrived before the failure


def test_no_backend_available_answers_503(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    a = sims("a")
    a.set_faults(down=True)
    gw = demo_gateway([backend("a", a.url), backend("b", f"http://127.0.0.1:{free_port()}", priority=2)])
    with pytest.raises(openai.InternalServerError) as info:
        azure(gw).chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 503
    assert info.value.body["code"] == "no_backend_available"  # type: ignore[index]


# --- bad input: always the envelope, never a 500 ------------------------------------------------

CHAT_PATH = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
GOOD = json.dumps({"messages": MESSAGES}).encode()
AUTH = {"api-key": KEY, "content-type": "application/json"}


@pytest.mark.parametrize(
    ("path", "method", "body", "headers", "status", "code"),
    [
        (CHAT_PATH, "POST", b"{not json", AUTH, 400, "invalid_json"),
        (CHAT_PATH, "POST", b"[1, 2]", AUTH, 400, "invalid_json"),
        (CHAT_PATH, "POST", b'{"messages": []}', AUTH, 400, "invalid_request"),
        (
            CHAT_PATH,
            "POST",
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            AUTH,
            400,
            "invalid_request",
        ),
        ("/v1/chat/completions", "POST", GOOD, AUTH, 400, "invalid_request"),  # no model
        ("/openai/deployments/nope/chat/completions", "POST", GOOD, AUTH, 404, "DeploymentNotFound"),
        (CHAT_PATH, "POST", b'{"pad": "' + b"x" * 5000 + b'"}', AUTH, 413, "payload_too_large"),
        (CHAT_PATH, "GET", None, AUTH, 405, "method_not_allowed"),
        (CHAT_PATH, "DELETE", None, AUTH, 405, "method_not_allowed"),
        (CHAT_PATH, "POST", GOOD, {"content-type": "application/json"}, 401, "invalid_api_key"),
        (CHAT_PATH, "POST", GOOD, {"api-key": "wrong-key"}, 401, "invalid_api_key"),
        (CHAT_PATH, "POST", GOOD, {"Authorization": "Basic abc"}, 401, "invalid_api_key"),
        ("/openai/nothing/here", "POST", GOOD, AUTH, 404, "route_not_found"),
        ("/favicon.ico", "GET", None, {}, 404, "route_not_found"),
        ("/gateway/admin/subscriptions", "GET", None, {}, 401, "invalid_admin_key"),
    ],
)
def test_bad_input_gets_an_openai_error_envelope(
    sims: Callable[..., SimulatorThread],
    demo_gateway: Callable[..., GatewayServer],
    path: str,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)], GATEWAY_MAX_BODY_BYTES="4096")
    got_status, got_headers, payload = raw(gw, path, method=method, body=body, headers=headers)
    assert got_status == status
    assert set(payload["error"]) == {"message", "type", "code", "param"}
    assert payload["error"]["code"] == code
    assert got_headers.get("x-request-id")


def test_health(sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    status, _, body = raw(gw, "/health", method="GET")
    assert status == 200
    assert body["status"] == "ok"
    request = urllib.request.Request(gw.url + "/health", method="HEAD")  # what uptime checks send
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def test_a_stream_cut_by_the_backend_is_charged_what_was_sent(
    sims: Callable[..., SimulatorThread], gateway_server: Callable[..., GatewayServer]
) -> None:
    from shared.api import ApiCall
    from shared.limits.limiter import Admission, NoLimits
    from shared.models import Caller

    settled: list[int] = []

    class Recording(NoLimits):
        async def admit(self, caller: Caller, call: ApiCall) -> Admission:
            return Admission(caller, 500, prompt_estimate=9)

        async def settle(self, admission: Admission, used_tokens: int) -> None:
            settled.append(used_tokens)
            await super().settle(admission, used_tokens)

    sim = sims("a")
    sim.set_faults(drop_mid_stream_after=4)
    settings = settings_for([backend("a", sim.url)], GATEWAY_DEMO_KEY=KEY)
    gw = gateway_server(lambda: Gateway(settings, limiter=Recording()))
    stream = azure(gw).chat.completions.create(model="chat", messages=MESSAGES, stream=True, max_tokens=20)
    with pytest.raises(openai.APIError):
        list(stream)
    deadline = time.monotonic() + 5
    while not settled and time.monotonic() < deadline:
        time.sleep(0.02)
    # The prompt estimate plus the content events that reached the caller; not a full refund, not the reservation.
    assert settled
    assert 9 < settled[0] < 9 + 20


def test_failover_is_bounded_by_max_attempts(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    bad, good = sims("bad"), sims("good")
    bad.set_faults(error_rate=1.0, error_status=500)
    gw = demo_gateway([backend("bad", bad.url), backend("good", good.url, priority=2)], GATEWAY_MAX_ATTEMPTS="1")
    with pytest.raises(openai.InternalServerError) as info:
        azure(gw).chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 503
    assert calls(good) == 0  # one attempt allowed: no failover


def test_openai_shape_streams_too(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    gw = demo_gateway([backend("a", sims("a").url)])
    client = OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    chunks = list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True, max_tokens=4))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --- whose fault: the breaker counts the backend's failures only ---------------------------------

POISON = b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 3}'  # a lone surrogate


def breaker_of(gw: GatewayServer, name: str) -> dict[str, Any]:
    _, _, report = raw(gw, "/gateway/admin/backends", method="GET", headers={"x-admin-key": ADMIN})
    return next(r for r in report["data"] if r["backend"] == name and r["deployment"] == "chat")


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_a_request_every_backend_fails_opens_no_breaker(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    a, b = sims("a"), sims("b")
    gw = demo_gateway(
        [backend("a", a.url), backend("b", b.url)],
        GATEWAY_BREAKER='{"failure_rate": 0.5, "min_requests": 3, "window_seconds": 30}',
    )
    # The lone surrogate that made Azure answer 500 no longer reaches a backend: the gateway refuses it (400).
    status, _, payload = raw(gw, CHAT_PATH, body=POISON, headers=AUTH)
    assert status == 400
    assert payload["error"]["code"] == "invalid_json"
    assert calls(a) == calls(b) == 0
    # A body both backends fail all the same (a poison the gateway cannot recognise) is played by faults.
    a.set_faults(error_rate=1.0, error_status=500, count=10)
    b.set_faults(error_rate=1.0, error_status=500, count=10)
    for _ in range(10):
        status, headers, payload = raw(gw, CHAT_PATH, body=json.dumps({"messages": MESSAGES}).encode(), headers=AUTH)
        assert status == 503
        assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1
        assert "may be the request itself" in payload["error"]["message"]
    assert calls(a) == calls(b) == 10  # each poison request was tried on both...
    assert breaker_of(gw, "a")["breaker"] == breaker_of(gw, "b")["breaker"] == "closed"  # ...and blamed on neither
    for _ in range(4):
        assert azure(gw).chat.completions.create(model="chat", messages=MESSAGES).choices


def test_500s_on_one_backend_open_its_breaker_under_the_rate_rule(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    bad, good = sims("bad"), sims("good")
    bad.set_faults(error_rate=1.0, error_status=500)
    gw = demo_gateway(
        [backend("bad", bad.url), backend("good", good.url, priority=2)],
        GATEWAY_BREAKER='{"failure_rate": 0.5, "min_requests": 4, "window_seconds": 30}',
    )
    for _ in range(4):  # each fails on bad and succeeds on good: bad's fault, four of four
        response = azure(gw).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        assert response.headers["x-gateway-backend"] == "good"
    row = breaker_of(gw, "bad")
    assert row["breaker"] == "open"
    assert "another backend served the same request" in row["breaker_reason"]
    azure(gw).chat.completions.create(model="chat", messages=MESSAGES)
    assert calls(bad) == 4  # open: not tried


def test_a_backend_that_cuts_streams_is_tripped(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    cutter, spare = sims("cutter"), sims("spare")
    cutter.set_faults(drop_mid_stream_after=3)
    gw = demo_gateway(
        [backend("cutter", cutter.url), backend("spare", spare.url, priority=2)],
        GATEWAY_BREAKER='{"failure_rate": 0.5, "min_requests": 3, "window_seconds": 30}',
    )
    for _ in range(3):
        with pytest.raises(openai.APIError):
            list(azure(gw).chat.completions.create(model="chat", messages=MESSAGES, stream=True, max_tokens=20))
    assert wait_for(lambda: breaker_of(gw, "cutter")["breaker"] == "open")
    assert "mid-stream" in breaker_of(gw, "cutter")["breaker_reason"]
    chunks = list(azure(gw).chat.completions.create(model="chat", messages=MESSAGES, stream=True, max_tokens=20))
    assert chunks
    assert calls(cutter) == 3


def _open_stream(gw: GatewayServer) -> Any:
    body = json.dumps({"messages": MESSAGES, "stream": True, "max_tokens": 200}).encode()
    request = urllib.request.Request(gw.url + CHAT_PATH, data=body, method="POST", headers=AUTH)
    response = urllib.request.urlopen(request, timeout=30)
    assert response.readline()  # the first event has arrived
    return response


def test_a_caller_leaving_a_stream_or_the_gateway_stopping_is_not_the_backends_fault(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    sim = sims("a")
    sim.set_latency(tokens_per_second=20)  # 200 tokens: ten seconds, plenty of time to leave
    gw = demo_gateway([backend("a", sim.url)], GATEWAY_BREAKER='{"failure_rate": 0.5, "min_requests": 1}')
    assert gw.gateway is not None
    left = _open_stream(gw)
    left.close()  # the caller goes away
    time.sleep(0.5)  # the gateway notices, closes the backend's side and reports the stream's end
    assert breaker_of(gw, "a")["breaker"] == "closed"  # one counted failure of one request would open it
    cut = _open_stream(gw)
    gw.run(gw.gateway.drain(2.0))  # the gateway shuts down and cuts the stream itself
    cut.close()
    assert breaker_of(gw, "a")["breaker"] == "closed"


def test_every_503_says_when_to_retry(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    a = sims("a")
    a.set_faults(down=True)
    clock = ManualClock()
    gw = demo_gateway(
        [backend("a", a.url)],
        clock=clock,
        GATEWAY_BREAKER='{"mode": "count", "failures": 2, "trip_seconds": 30}',
    )
    good = json.dumps({"messages": MESSAGES}).encode()
    status, headers, _ = raw(gw, CHAT_PATH, body=good, headers=AUTH)
    assert (status, {k.lower(): v for k, v in headers.items()}["retry-after"]) == (503, "1")  # nothing scheduled
    raw(gw, CHAT_PATH, body=good, headers=AUTH)  # the second failure opens the breaker
    clock.advance(10)
    status, headers, payload = raw(gw, CHAT_PATH, body=good, headers=AUTH)
    assert status == 503
    assert payload["error"]["code"] == "no_backend_available"
    assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "20"  # when the breaker half-opens


# --- metering what the backends were really asked for ----------------------------------------------


def test_a_cut_stream_is_charged_the_content_tokens_the_caller_received(
    sims: Callable[..., SimulatorThread], gateway_server: Callable[..., GatewayServer]
) -> None:
    from shared.api import ApiCall
    from shared.limits.limiter import Admission, NoLimits
    from shared.models import Caller
    from shared.tokens import count_text

    settled: list[int] = []

    class Recording(NoLimits):
        async def admit(self, caller: Caller, call: ApiCall) -> Admission:
            return Admission(caller, 500, prompt_estimate=9)

        async def settle(self, admission: Admission, used_tokens: int) -> None:
            settled.append(used_tokens)
            await super().settle(admission, used_tokens)

    sim = sims("a")
    sim.set_faults(drop_mid_stream_after=12)  # the role event, then eleven content events
    settings = settings_for([backend("a", sim.url)], GATEWAY_DEMO_KEY=KEY)
    gw = gateway_server(lambda: Gateway(settings, limiter=Recording()))
    received: list[str] = []

    def drain() -> None:
        for chunk in azure(gw).chat.completions.create(model="chat", messages=MESSAGES, stream=True, max_tokens=40):
            received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError):
        drain()
    assert wait_for(lambda: bool(settled))
    text = "".join(received)
    assert text
    # The prompt estimate plus the tokens of the text that arrived, counted as reservations count.
    assert settled == [9 + count_text(text)]


def test_attempts_abandoned_at_the_first_byte_timeout_are_counted_with_their_cost(
    sims: Callable[..., SimulatorThread], demo_gateway: Callable[..., GatewayServer]
) -> None:
    slow, fast = sims("slow"), sims("fast")
    slow.set_faults(slow_first_byte_ms=2000)
    gw = demo_gateway(
        [backend("slow", slow.url, timeouts={"first_byte": 0.2}), backend("fast", fast.url, priority=2)],
        GATEWAY_PRICES='{"chat": {"input": 2.0, "output": 8.0}}',
    )
    for _ in range(2):
        response = azure(gw).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
        assert response.headers["x-gateway-backend"] == "fast"
    status, _, stats = raw(gw, "/gateway/admin/stats", method="GET", headers={"x-admin-key": ADMIN})
    assert status == 200
    abandoned = stats["abandoned"]
    assert abandoned["attempts"] == 2
    tokens = abandoned["estimated_prompt_tokens"]
    assert tokens > 0
    assert abandoned["estimated_cost"] == pytest.approx(tokens * 2.0 / 1000)
    assert abandoned["by_deployment"]["chat"]["attempts"] == 2
