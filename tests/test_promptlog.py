"""The audit log of prompts and completions: records on Azurite's blob service for unary, streamed, cached and
failed requests, masked and capped; a full queue that loses records but never a request; the look-ups by id.

The end-to-end tests drive the real `openai` SDK against the gateway host, a simulator behind it, and
Azurite's blob service (the same SDK calls the gateway makes in Azure, with a connection string).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from openai import AzureOpenAI

from shared.admin.cli import main as admin_main
from shared.admin.subscriptions import SubscriptionAdmin
from shared.clock import ManualClock
from shared.config import load_settings
from shared.errors import BadRequest, StoreUnavailable
from shared.gateway import Gateway
from shared.limits.limiter import NoLimits
from shared.models import Caller, Limits, PromptLogScope, Usage
from shared.outcomes import RequestRecord
from shared.promptlog.config import PromptLogConfig
from shared.promptlog.log import PromptLog, hour_prefix
from shared.promptlog.redact import Redactor, luhn_valid
from shared.promptlog.transcript import StreamTranscript
from shared.stores.blobs import AzureAppendLog, EmbeddedAppendLog, has_blob_endpoint
from shared.stores.embedded import (
    EmbeddedBreakerStore,
    EmbeddedCounterStore,
    EmbeddedLedgerStore,
    EmbeddedSubscriptionStore,
)
from shared.stores.factory import Stores
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.azurite import Azurite
from tests.fixtures.servers import GatewayServer, settings_for

ALICE, BOB = "alice-logged-key", "bob-not-logged-key"
ADMIN = "admin-key-for-tests"
API_VERSION = "2024-10-21"
CARD = "4111 1111 1111 1111"  # the classic test Visa number: passes the Luhn check
NOT_A_CARD = "4111 1111 1111 1112"


def embedded_stores() -> Stores:
    return Stores(
        EmbeddedSubscriptionStore(), EmbeddedBreakerStore(), EmbeddedCounterStore(), EmbeddedLedgerStore(), "embedded"
    )


# --- masking, capping, assembling -------------------------------------------------------------------


def test_card_numbers_that_pass_the_luhn_check_and_emails_are_masked() -> None:
    redactor = Redactor(("credit_card", "email"))
    text = f"pay with {CARD} or {NOT_A_CARD}, mail ana.lopez+x@example.co.uk, order 12345"
    masked = redactor.text(text)
    assert CARD not in masked
    assert "[REDACTED:credit_card]" in masked
    assert NOT_A_CARD in masked  # a digit run that fails the Luhn check is not a card
    assert "[REDACTED:email]" in masked
    assert "example.co.uk" not in masked
    assert "order 12345" in masked
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


def test_operator_patterns_are_masked_in_every_string_of_the_record() -> None:
    redactor = Redactor(("email", r"(?i)project-[a-z]+"))
    body = {"messages": [{"role": "user", "content": "Project-Zeus for bo@x.io"}], "n": 1}
    assert redactor.value(body) == {
        "messages": [{"role": "user", "content": "[REDACTED] for [REDACTED:email]"}],
        "n": 1,
    }


def test_bad_settings_are_reported_together() -> None:
    from shared.errors import ConfigError

    backends = '[{"name": "a", "endpoint": "http://127.0.0.1:1", "deployments": ["chat"]}]'
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "GATEWAY_BACKENDS": backends,
                "GATEWAY_PROMPT_LOG": json.dumps({"container": "Bad_Name", "redact": ["(unclosed"], "queue_size": 0}),
            }
        )
    text = str(caught.value)
    assert "GATEWAY_PROMPT_LOG.container" in text
    assert "GATEWAY_PROMPT_LOG.redact" in text
    assert "GATEWAY_PROMPT_LOG.queue_size" in text


def test_a_stream_is_assembled_into_its_completion_from_events_split_anywhere() -> None:
    events = [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "f", "arguments": '{"a"'}}]},
                }
            ],
        },
        {
            "id": "c1",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}],
        },
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    wire = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    transcript = StreamTranscript(max_chars=1000)
    for i in range(0, len(wire), 7):  # chunk borders fall anywhere, even inside an event
        transcript.feed(wire[i : i + 7])
    result = transcript.result()
    [choice] = result["choices"]
    assert choice["message"]["content"] == "Hello"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert choice["finish_reason"] == "stop"
    assert result["id"] == "c1"
    assert "truncated" not in result


def _record(request_id: str, content: str, *, caller: Caller | None = None) -> RequestRecord:
    record = RequestRecord(request_id, operation="chat/completions", status=200, deployment="chat")
    record.caller = caller or Caller("sub-1", "alice", Limits(), prompt_log=PromptLogScope())
    record.request_body = {"messages": [{"role": "user", "content": content}]}
    record.completion = {"choices": [{"message": {"content": "ok"}}]}
    record.usage = Usage(3, 1)
    return record


async def test_a_record_over_the_cap_keeps_its_fields_and_marks_the_cut() -> None:
    store = EmbeddedAppendLog()
    log = PromptLog(PromptLogConfig(max_record_bytes=2048), store, ManualClock(1_750_000_000), instance_id="i1")
    log.add(_record("big-1", "x" * 10_000))
    await log.close()
    [name] = store.files
    [line] = bytes(store.files[name]).splitlines()
    assert len(line) <= 2048
    record = json.loads(line)
    assert record["truncated"] is True
    assert record["request"]["truncated"] is True
    assert record["request"]["original_chars"] > 10_000
    assert record["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert record["response"] == {"choices": [{"message": {"content": "ok"}}]}  # small enough to keep whole
    assert log.counts["truncated"] == 1


class BrokenStore(EmbeddedAppendLog):
    async def append(self, name: str, data: bytes) -> None:
        raise StoreUnavailable("Blob Storage append: ServiceRequestError")


async def test_storage_refusing_a_batch_counts_the_records_as_failed_and_raises_nothing() -> None:
    counted: list[tuple[str, int]] = []
    log = PromptLog(
        PromptLogConfig(flush_seconds=0.01),
        BrokenStore(),
        ManualClock(1_750_000_000),
        instance_id="i1",
        on_count=lambda result, n: counted.append((result, n)),
    )
    for i in range(3):
        log.add(_record(f"r{i}", "hi"))
    await log.close()
    assert log.counts["failed"] == 3
    assert log.counts["written"] == 0
    assert sum(n for result, n in counted if result == "failed") == 3


async def test_a_request_not_marked_for_the_log_is_not_queued() -> None:
    log = PromptLog(PromptLogConfig(), EmbeddedAppendLog(), ManualClock(0), instance_id="i1")
    record = _record("r1", "hi")
    record.request_body = None
    log.add(record)
    assert log.counts["queued"] == 0
    await log.close()


def test_connection_strings_that_reach_a_blob_service() -> None:
    assert has_blob_endpoint("UseDevelopmentStorage=true")
    assert has_blob_endpoint(
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;EndpointSuffix=core.windows.net"
    )
    assert has_blob_endpoint("AccountName=a;AccountKey=k;BlobEndpoint=http://127.0.0.1:1/a;")
    assert not has_blob_endpoint("AccountName=a;AccountKey=k;TableEndpoint=http://127.0.0.1:1/a;")


# --- end to end on Azurite ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    config = SimulatorConfig(name="sim-promptlog", deployments=("chat",), api_key="sim-key")
    with SimulatorThread(config) as running:
        yield running


@dataclass
class Stack:
    server: GatewayServer
    container: str

    @property
    def gateway(self) -> Gateway:
        assert self.server.gateway is not None
        return self.server.gateway

    def client(self, key: str = ALICE) -> AzureOpenAI:
        return AzureOpenAI(azure_endpoint=self.server.url, api_key=key, api_version=API_VERSION, max_retries=0)

    def flush(self) -> None:
        self.server.run(self.gateway.prompt_log.flush())

    def admin_get(self, path: str) -> tuple[int, Any]:
        async def get() -> tuple[int, Any]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{self.server.url}/gateway/admin/{path}", headers={"x-admin-key": ADMIN}) as response,
            ):
                return response.status, await response.json()

        return asyncio.run(get())

    def record(self, request_id: str) -> dict[str, Any]:
        self.flush()
        status, body = self.admin_get(f"requests/{request_id}")
        assert status == 200, body
        return dict(body)


def _stack(gateway_server: Callable[..., GatewayServer], sim: SimulatorThread, storage: str, **log: Any) -> Stack:
    container = "t" + secrets.token_hex(6)
    settings = settings_for(
        [{"name": "sim", "endpoint": sim.url, "deployments": ["chat"]}],
        GATEWAY_STORAGE=storage,
        GATEWAY_ADMIN_KEY=ADMIN,
        GATEWAY_CACHE=json.dumps({"deployments": ["chat"], "semantic": False}),
        GATEWAY_PROMPT_LOG=json.dumps({"container": container, "flush_seconds": 0.05, **log}),
    )
    server = gateway_server(lambda: Gateway(settings, stores=embedded_stores(), limiter=NoLimits()))
    admin = SubscriptionAdmin(server.gateway.stores.subscriptions)
    server.run(admin.create({"name": "alice", "prompt_log": True}, primary_key=ALICE))
    server.run(admin.create({"name": "bob"}, primary_key=BOB))
    return Stack(server, container)


@pytest.fixture
def stack(
    gateway_server: Callable[..., GatewayServer], sim: SimulatorThread, azurite_blob: Azurite
) -> Callable[..., Stack]:
    def start(**log: Any) -> Stack:
        return _stack(gateway_server, sim, azurite_blob.blob_connection_string, **log)

    return start


def _ask(s: Stack, request_id: str, content: str, key: str = ALICE, **kwargs: Any) -> Any:
    return s.client(key).chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": content}],
        extra_headers={"x-request-id": request_id},
        **kwargs,
    )


@pytest.mark.azurite
def test_unary_cached_streamed_and_failed_requests_are_recorded_on_blob_storage(stack: Callable[..., Stack]) -> None:
    s = stack()
    question = f"My card is {CARD} and my mail is ana@example.com. What is a tide?"
    first = _ask(s, "req-unary-1", question)
    assert first.headers["x-request-id"] == "req-unary-1"
    answer = first.parse().choices[0].message.content
    s.server.run(s.gateway.cache.flush())  # type: ignore[union-attr]  # the answer stored before the repeat
    _ask(s, "req-cached-1", question)
    streamed = _ask(s, "req-stream-1", "Tell me about the moon.", stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    with pytest.raises(Exception, match="404"):
        s.client().chat.completions.create(
            model="no-such-deployment",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": "req-failed-1"},
        )
    _ask(s, "req-bob-1", "Bob's question is never logged.", key=BOB)

    unary = s.record("req-unary-1")
    assert unary["status"] == 200
    assert unary["subscription"].startswith("sub-")
    assert unary["identity"]["subscription_name"] == "alice"
    assert unary["identity"]["auth_mode"] == "key"
    assert unary["deployment"] == "chat"
    assert unary["backend"] == "sim"
    assert unary["cache"] == "MISS"
    assert unary["usage"]["total_tokens"] > 0
    asked = unary["request"]["messages"][0]["content"]
    assert CARD not in asked
    assert "ana@example.com" not in asked
    assert "[REDACTED:credit_card]" in asked
    assert "[REDACTED:email]" in asked
    assert unary["response"]["choices"][0]["message"]["content"] == answer

    cached = s.record("req-cached-1")
    assert (cached["cache"], cached["outcome"], cached["backend"]) == ("HIT", "cache_hit", None)
    assert cached["response"]["choices"][0]["message"]["content"] == answer

    stream = s.record("req-stream-1")
    assert stream["streamed"] is True
    assert stream["response"]["choices"][0]["message"]["content"] == text
    assert stream["response"]["choices"][0]["finish_reason"] == "stop"
    assert stream["usage"]["completion_tokens"] > 0

    failed = s.record("req-failed-1")
    assert failed["status"] == 404
    assert failed["response"]["error"]["code"] == "DeploymentNotFound"

    status, body = s.admin_get("requests/req-bob-1")
    assert status == 404
    assert body["error"]["code"] == "record_not_found"

    async def blob_names() -> list[str]:
        store = AzureAppendLog(s.container, connection_string=s.gateway.settings.storage.connection_string)  # type: ignore[union-attr,arg-type]
        try:
            return await store.names("")
        finally:
            await store.close()

    names = asyncio.run(blob_names())
    assert len(names) == 1  # one append blob for the hour and this instance
    assert names[0].startswith(hour_prefix(s.gateway.clock.now())[:11])  # YYYY/MM/DD/
    assert names[0].endswith(".jsonl")
    stats = s.admin_get("stats")[1]["prompt_log"]
    assert stats["store"] == "blob"
    assert stats["written"] == 4
    assert stats["dropped"] == 0


@pytest.mark.azurite
def test_a_long_exchange_is_cut_to_the_cap_and_says_so(stack: Callable[..., Stack]) -> None:
    s = stack(max_record_bytes=4096)
    _ask(s, "req-long-1", "word " * 5000)
    record = s.record("req-long-1")
    assert record["truncated"] is True
    assert record["request"]["truncated"] is True
    assert record["status"] == 200


@pytest.mark.azurite
def test_the_cli_reads_a_record_from_blob_storage(
    stack: Callable[..., Stack],
    azurite_blob: Azurite,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = stack()
    _ask(s, "req-cli-1", "Where is the record?")
    s.flush()
    monkeypatch.setenv("GATEWAY_STORAGE", azurite_blob.blob_connection_string)
    monkeypatch.setenv("GATEWAY_PROMPT_LOG", json.dumps({"container": s.container}))
    assert admin_main(["promptlog", "req-cli-1", "--hours", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["request_id"] == "req-cli-1"
    assert admin_main(["promptlog", "req-nowhere"]) == 1


def test_a_full_queue_loses_records_but_never_a_request(
    gateway_server: Callable[..., GatewayServer], sim: SimulatorThread
) -> None:
    # A queue of 2 that is never drained while the requests run (its batch never fills, its timer is long).
    s = _stack(gateway_server, sim, "", queue_size=2, batch_records=1000, flush_seconds=60)
    statuses: list[int] = []

    def one(i: int) -> None:
        statuses.append(_ask(s, f"req-load-{i}", f"question {i}").http_response.status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(40)))
    assert statuses == [200] * 40
    stats = s.admin_get("stats")[1]["prompt_log"]
    assert stats["store"] == "embedded"
    assert stats["queue"] == 2
    assert stats["dropped"] == 38
    s.flush()
    assert s.admin_get("stats")[1]["prompt_log"]["written"] == 2
    snapshot = s.gateway.telemetry.snapshot()
    assert snapshot.sums["gateway.promptlog.records"][("dropped",)] == 38


@pytest.mark.azurite
def test_the_admin_api_switches_the_log_per_subscription_and_deployment(stack: Callable[..., Stack]) -> None:
    s = stack()
    admin = SubscriptionAdmin(s.gateway.stores.subscriptions)
    [alice] = [sub for sub in s.server.run(admin.list()) if sub["name"] == "alice"]
    assert alice["prompt_log"] is True
    changed = s.server.run(admin.update(alice["id"], {"prompt_log": {"deployments": ["other"]}}))
    assert changed["prompt_log"] == {"deployments": ["other"]}
    s.gateway.authenticator.forget()
    _ask(s, "req-other-1", "Not for this deployment.")
    s.flush()
    assert s.admin_get("requests/req-other-1")[0] == 404
    for bad in ({"deployments": []}, {"deployments": "chat"}, "yes", {"chat": True}):
        with pytest.raises(BadRequest):
            s.server.run(admin.update(alice["id"], {"prompt_log": bad}))
    assert s.server.run(admin.update(alice["id"], {"prompt_log": False}))["prompt_log"] is False


def test_the_cli_flag_sets_the_log_on_off_or_for_some_deployments() -> None:
    from shared.admin.cli import _fields, _parser

    def fields(value: str) -> object:
        return _fields(_parser().parse_args(["update", "sub-1", "--prompt-log", value]))["prompt_log"]

    assert fields("on") is True
    assert fields("off") is False
    assert fields("chat, other") == {"deployments": ["chat", "other"]}
