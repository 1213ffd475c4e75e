"""The optional judge deployment (shared.cache.judge): off by default, one token, its own memo and timeout, a miss
whenever it cannot say "yes", and its tokens the gateway's, never the caller's."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shared.cache.config import CacheConfig
from shared.cache.judge import Judge
from shared.cache.stage import HIT, JUDGE, JUDGE_UNAVAILABLE, MISS
from shared.errors import ConfigError, NoBackendAvailable
from shared.proxy import BackendCall, Exhausted, ProxyResult
from tests.test_cache import ALICE, DEPLOYMENTS, answer, chat, make_cache, miss_then_store

# A rewording the local checks cannot prove (the judge is asked only for those), and one they can (never asked).
STORED, ASKED = "How do I fix a flat bike tyre?", "my bike tyre went flat, what should I do?"
PROVEN = "how can I repair a flat bike tyre"


class ScriptedProxy:
    """Answers every judge call with `reply` (a word, an exception-like Exhausted, or a delay)."""

    def __init__(self, reply: str | None = "yes", *, delay: float = 0.0, status: int = 200) -> None:
        self.reply, self.delay, self.status = reply, delay, status
        self.calls: list[dict[str, Any]] = []

    async def forward(self, call: BackendCall) -> ProxyResult | Exhausted:
        self.calls.append(json.loads(call.body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.reply is None:
            return Exhausted(NoBackendAvailable("no backend"), ())
        body = {
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.reply}, "finish_reason": "length"}
            ],
            "usage": {"prompt_tokens": 80, "completion_tokens": 1, "total_tokens": 81},
        }
        return ProxyResult(self.status, {}, "sim", None, (), body=json.dumps(body).encode())


async def judged_lookup(proxy: ScriptedProxy, limit: float = 1.0) -> tuple[Any, Judge]:
    cache, embedder = make_cache(similarity_threshold=0.9)
    await miss_then_store(cache, chat(STORED), answer())
    embedder.tie(ASKED, like=STORED, cosine=0.95)
    cache.judge = Judge(proxy, "chat", timeout_seconds=limit)  # type: ignore[arg-type]
    return await cache.lookup(ALICE, chat(ASKED), {}), cache.judge


def test_the_judge_is_off_by_default_and_must_name_a_deployment() -> None:
    assert CacheConfig.parse({"deployments": ["chat"]}, DEPLOYMENTS).judge is None
    assert CacheConfig.parse({"deployments": ["chat"], "judge": "chat"}, DEPLOYMENTS).judge == "chat"
    with pytest.raises(ConfigError, match=r"GATEWAY_CACHE\.judge"):
        CacheConfig.parse({"deployments": ["chat"], "judge": "nope"}, DEPLOYMENTS)


async def test_yes_serves_the_candidate_with_one_token_asked_and_the_tokens_metered_to_the_gateway() -> None:
    proxy = ScriptedProxy("Yes.")
    lookup, judge = await judged_lookup(proxy)
    assert (lookup.state, lookup.check) == (HIT, "pass")
    (sent,) = proxy.calls
    assert (sent["max_tokens"], sent["temperature"]) == (1, 0)
    assert sent["messages"][1]["content"] == f"A: {STORED}\nB: {ASKED}"
    assert (judge.stats.calls, judge.stats.prompt_tokens, judge.stats.completion_tokens) == (1, 80, 1)


async def test_no_is_a_miss_labelled_judge() -> None:
    lookup, _ = await judged_lookup(ScriptedProxy("no"))
    assert (lookup.state, lookup.check) == (MISS, JUDGE)


@pytest.mark.parametrize(
    "proxy",
    [ScriptedProxy("Lorem"), ScriptedProxy(None), ScriptedProxy("yes", status=500), ScriptedProxy("yes", delay=1.0)],
    ids=["neither yes nor no", "no backend", "an error status", "too slow"],
)
async def test_a_judge_that_cannot_say_is_a_miss_never_a_hit(proxy: ScriptedProxy) -> None:
    lookup, judge = await judged_lookup(proxy, limit=0.1)
    assert (lookup.state, lookup.check, lookup.entry) == (MISS, JUDGE_UNAVAILABLE, None)
    assert judge.stats.failures == 1


async def test_verdicts_are_memoised_either_way_round_and_failures_are_not() -> None:
    judge = Judge(ScriptedProxy("yes"), "chat", timeout_seconds=1)  # type: ignore[arg-type]
    assert await judge.same("a", "b") is True
    assert await judge.same("b", "a") is True
    assert (judge.stats.calls, judge.stats.memoised) == (1, 1)
    failing = Judge(ScriptedProxy(None), "chat", timeout_seconds=1)  # type: ignore[arg-type]
    assert await failing.same("a", "b") is None
    assert await failing.same("a", "b") is None
    assert failing.stats.calls == 2


async def test_a_proven_candidate_is_served_without_asking_the_judge() -> None:
    # The local proof matched every term: the judge would cost a backend call for nothing.
    proxy = ScriptedProxy("no")
    cache, embedder = make_cache(similarity_threshold=0.9)
    await miss_then_store(cache, chat(STORED), answer())
    embedder.tie(PROVEN, like=STORED, cosine=0.97)
    cache.judge = Judge(proxy, "chat", timeout_seconds=1)  # type: ignore[arg-type]
    lookup = await cache.lookup(ALICE, chat(PROVEN), {})
    assert lookup is not None
    assert (lookup.state, lookup.check) == (HIT, "pass")
    assert proxy.calls == []


async def test_the_judge_never_overrules_a_rule_that_objects() -> None:
    # A different number is the guard's objection, final: a "yes" from the judge is never asked for.
    proxy = ScriptedProxy("yes")
    cache, embedder = make_cache(similarity_threshold=0.9)
    await miss_then_store(cache, chat("How long do I roast a 4 kg turkey?"), answer())
    embedder.tie("How long do I roast a 7 kg turkey?", like="How long do I roast a 4 kg turkey?", cosine=0.98)
    cache.judge = Judge(proxy, "chat", timeout_seconds=1)  # type: ignore[arg-type]
    lookup = await cache.lookup(ALICE, chat("How long do I roast a 7 kg turkey?"), {})
    assert lookup is not None
    assert (lookup.state, lookup.check) == (MISS, "number")
    assert proxy.calls == []
