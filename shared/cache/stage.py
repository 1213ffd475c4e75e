"""The semantic cache stage: lookup (exact, then semantic behind the guard), hits, and what gets stored.

Only complete, unfiltered answers are stored; a cache failure never fails a
request, it is logged, counted and bypassed. Its neighbours: `key.py` (scope
and key), `storable.py` (what may be stored), `recorder.py` (streamed misses),
`replay.py` (streamed hits), `guard.py`, `verify.py` and the optional `judge.py` (near misses), `embedders.py`. The
README's cache section describes the behaviour in full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.api import ApiCall, wants_usage
from shared.cache import guard, verify
from shared.cache.config import CacheConfig
from shared.cache.embedders import Embedder, build_embedder
from shared.cache.judge import Judge
from shared.cache.key import Plan, plan_for
from shared.cache.recorder import StreamRecorder
from shared.cache.replay import replay
from shared.cache.storable import unstorable
from shared.clock import Clock
from shared.errors import EmbeddingUnavailable, StoreUnavailable
from shared.models import Caller, GatewayResponse, Operation, Usage
from shared.stores.protocols import CacheEntry, VectorStore

if TYPE_CHECKING:
    from shared.proxy import Proxy

log = logging.getLogger("gateway.cache")

HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"
# Checks of the optional judge (metric labels, besides "pass" and shared.cache.verify.REASONS).
JUDGE, JUDGE_UNAVAILABLE = "judge", "judge_unavailable"
FAILURE_PAUSE_SECONDS = 5.0


@dataclass(slots=True)
class CacheStats:
    """Counters since start, for metrics and tests."""

    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    bypasses: int = 0
    guard_rejections: int = 0
    guard_reasons: dict[str, int] = field(default_factory=dict)  # shared.cache.verify.REASONS -> count
    failures: int = 0
    verify_failures: int = 0
    stored: int = 0
    not_stored: dict[str, int] = field(default_factory=dict)  # reason -> count


@dataclass(frozen=True, slots=True)
class Lookup:
    """The cache's answer for one request: HIT (with the entry), MISS (with where to store) or BYPASS."""

    state: str
    reason: str = ""
    plan: Plan | None = None
    entry: CacheEntry | None = None
    similarity: float | None = None  # semantic hits only
    age: float = 0.0
    # The verification of a semantic candidate: "pass", a shared.cache.verify reason, or "unavailable"; a metric label.
    check: str = ""

    @property
    def hit(self) -> bool:
        return self.state == HIT

    @property
    def storable(self) -> bool:
        return self.state == MISS and self.plan is not None

    @property
    def tokens_saved(self) -> int:
        return self.entry.prompt_tokens + self.entry.completion_tokens if self.entry else 0

    @property
    def headers(self) -> dict[str, str]:
        headers = {"x-cache": self.state}
        if self.similarity is not None:
            headers["x-cache-similarity"] = f"{self.similarity:.4f}"
        if self.hit:
            headers["age"] = str(int(self.age))
        return headers


def _bypass(reason: str) -> Lookup:
    return Lookup(BYPASS, reason)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class Cache:
    def __init__(self, config: CacheConfig, store: VectorStore, embedder: Embedder, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.embedder = embedder
        self.clock = clock
        self.stats = CacheStats()
        # Every semantic candidate passes this before it is served; replaceable in tests.
        self.verifier: Callable[[str, str], verify.Verdict] = verify.verify
        # And then, when configured, the judge deployment (shared.cache.judge); build_cache sets it.
        self.judge: Judge | None = None
        self._paused_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def serves(self, call: ApiCall) -> bool:
        return call.operation is Operation.CHAT and call.deployment in self.config.deployments

    # ---- lookup

    def plan(self, caller: Caller, call: ApiCall) -> Plan | str:
        """The scope and key of a request, or why it cannot be cached."""
        return plan_for(self.config, caller, call)

    async def lookup(self, caller: Caller, call: ApiCall, headers: Mapping[str, str]) -> Lookup | None:
        """None when the cache does not serve this request at all (another deployment, embeddings)."""
        if not self.serves(call):
            return None
        try:
            lookup = await self._lookup(caller, call, headers)
        except (StoreUnavailable, EmbeddingUnavailable, TimeoutError) as exc:
            lookup = self._failed("lookup", exc)
        except Exception as exc:  # a cache bug or this request's content: logged with its trace, bypassed
            log.exception("cache lookup failed unexpectedly")
            lookup = self._failed("lookup", exc, pause=False)
        if lookup.state == BYPASS:
            self.stats.bypasses += 1
        elif lookup.state == MISS:
            self.stats.misses += 1
        return lookup

    async def _lookup(self, caller: Caller, call: ApiCall, headers: Mapping[str, str]) -> Lookup:
        if caller.cache_opt_out or caller.subscription_id in self.config.opt_out_subscriptions:
            return _bypass("subscription opted out")
        directives = _cache_control(headers)
        if "no-store" in directives or "no-cache" in directives:
            return _bypass("cache-control")
        plan = self.plan(caller, call)
        if isinstance(plan, str):
            return _bypass(plan)
        if not _encodable(plan.text):
            # A lone surrogate would fail the embedder or the store: this request's problem, nobody else's.
            return _bypass("unencodable prompt")
        now = self.clock.now()
        if now < self._paused_until:
            return _bypass("cache unavailable")
        max_age = directives.get("max-age")
        if max_age == 0:
            return Lookup(MISS, "refresh", plan)  # the caller asked for a fresh answer; it replaces the old
        return await self._find(plan, max_age)

    def _failed(self, what: str, exc: BaseException, *, pause: bool = True) -> Lookup:
        """Count a failure and bypass; `pause` (the store or embedder itself failed) bypasses for a while.

        A failure that one request causes (its content, or a bug it walks into) never
        pauses: one caller repeating such a request must not switch the cache off for all.
        """
        self.stats.failures += 1
        if not pause:
            log.warning("cache %s failed (%s: %s); bypassing it for this request", what, type(exc).__name__, exc)
            return _bypass("cache failed")
        self._paused_until = self.clock.now() + FAILURE_PAUSE_SECONDS
        log.warning(
            "cache %s failed (%s: %s); bypassing the cache for %.0f s",
            what,
            type(exc).__name__,
            exc,
            FAILURE_PAUSE_SECONDS,
        )
        return _bypass("cache unavailable")

    async def _find(self, plan: Plan, max_age: float | None) -> Lookup:
        config = self.config
        async with asyncio.timeout(config.store_timeout_seconds):
            entry = await self.store.get(plan.scope, plan.key)
        now = self.clock.now()
        if entry is not None and (max_age is None or now - entry.created_at <= max_age):
            self.stats.exact_hits += 1
            return Lookup(HIT, "exact", plan, entry, age=now - entry.created_at)
        if not plan.semantic:
            return Lookup(MISS, "no exact match", plan)
        async with asyncio.timeout(config.embed_timeout_seconds):
            vector = await self.embedder.embed(plan.text)
        plan = Plan(plan.scope, plan.key, plan.text, plan.semantic, vector)
        async with asyncio.timeout(config.store_timeout_seconds):
            match = await self.store.nearest(plan.scope, vector, config.similarity_threshold)
        if match is None:
            return Lookup(MISS, "no similar prompt", plan)
        age = self.clock.now() - match.entry.created_at
        if max_age is not None and age > max_age:
            return Lookup(MISS, "older than max-age", plan)
        check = ""
        if config.guard:
            verdict = self._verify(plan.text, match.entry.prompt)
            if verdict is None:
                # The check could not say: never a hit. Not stored either, as for any other bypass.
                return Lookup(BYPASS, "verification unavailable", check=verify.UNAVAILABLE)
            # A judge is asked what the local checks cannot prove (a rewording), or everything the guard alone passes
            # when the verification is off; never to overrule a rule that objects.
            ask = self.judge is not None and (verdict.reason == verify.UNPROVEN or (verdict.ok and not config.verify))
            if not verdict.ok and not ask:
                reason = verdict.reason or "guard"
                self.stats.guard_rejections += 1
                self.stats.guard_reasons[reason] = self.stats.guard_reasons.get(reason, 0) + 1
                log.info("cache verification rejected a match at similarity %.3f: %s", match.similarity, reason)
                return Lookup(MISS, "guard", plan, similarity=None, check=reason)
            check = "pass"
            if ask:
                same = await self._judged(plan.text, match.entry.prompt)
                if not same:
                    reason = JUDGE if same is False else JUDGE_UNAVAILABLE
                    self.stats.guard_rejections += 1
                    self.stats.guard_reasons[reason] = self.stats.guard_reasons.get(reason, 0) + 1
                    return Lookup(MISS, "judge", plan, similarity=None, check=reason)
        self.stats.semantic_hits += 1
        return Lookup(HIT, "semantic", plan, match.entry, round(match.similarity, 4), age, check=check)

    async def _judged(self, new: str, stored: str) -> bool | None:
        """The judge's verdict; None when it could not say (a miss, never a hit)."""
        assert self.judge is not None  # noqa: S101 - only called when configured
        try:
            return await self.judge.same(new, stored)
        except Exception:  # a bug or an unexpected transport error must never serve an answer
            log.exception("cache judge failed; a miss")
            self.judge.stats.failures += 1
            return None

    def _verify(self, new: str, stored: str) -> verify.Verdict | None:
        """The candidate's verdict, or None when the check itself failed (logged with its trace)."""
        try:
            if self.config.verify:
                return self.verifier(new, stored)
            alone = guard.check(new, stored)
            return verify.Verdict(alone.ok, alone.reason)
        except Exception:  # a bug in a check must never serve an answer: the lookup bypasses
            log.exception("cache verification failed; bypassing")
            self.stats.verify_failures += 1
            return None

    # ---- hits

    def respond(self, lookup: Lookup, call: ApiCall, headers: Mapping[str, str]) -> GatewayResponse:
        """A hit as the caller asked for it: a chat.completion, or a stream of chunks ending in [DONE]."""
        assert lookup.entry is not None  # noqa: S101 - only called for hits
        answer = json.loads(lookup.entry.response)
        answer["id"] = f"chatcmpl-{secrets.token_urlsafe(18)}"
        answer["created"] = int(self.clock.now())
        # A hit bills nothing: the usage the caller sees says so (the tokens saved are in the metrics).
        answer["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        out = {**headers, **lookup.headers}
        if not call.stream:
            out["content-type"] = "application/json"
            return GatewayResponse(200, out, json.dumps(answer).encode())
        out["content-type"] = "text/event-stream"
        out["cache-control"] = "no-cache"
        return GatewayResponse(200, out, stream=replay(answer, include_usage=wants_usage(call.body)))

    # ---- stores

    def save(self, lookup: Lookup, status: int, body: bytes, answer: Mapping[str, Any] | None = None) -> None:
        """Keep a backend's unary answer if it may be cached; in the background, failures logged.

        `answer` is the body already parsed (the pipeline parses it once for the meter); parsed here if not given.
        """
        if not lookup.storable or lookup.plan is None:
            return
        if status != 200:
            self.skip(f"status {status}")
            return
        parsed: Any = answer
        if parsed is None:
            try:
                parsed = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.skip("unreadable body")
                return
        self.keep(lookup.plan, parsed, body)

    def recorder(self, lookup: Lookup | None) -> StreamRecorder | None:
        """Collects a streamed miss as it is forwarded; `complete()` stores it once the stream has ended well."""
        if lookup is None or not lookup.storable or lookup.plan is None:
            return None
        return StreamRecorder(self, lookup.plan)

    def keep(self, plan: Plan, answer: Any, body: bytes) -> None:
        """Store `answer` (a chat.completion, `body` its JSON) under `plan` in the background, if it may be stored."""
        reason = unstorable(answer, len(body), cache_tool_calls=self.config.cache_tool_calls)
        if reason:
            self.skip(reason)
            return
        usage = answer.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        tokens = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        self._spawn(self._put(plan, body, tokens))

    def skip(self, reason: str) -> None:
        """Count an answer that was not stored, by why."""
        self.stats.not_stored[reason] = self.stats.not_stored.get(reason, 0) + 1

    async def _put(self, plan: Plan, body: bytes, usage: Usage) -> None:
        try:
            vector = plan.vector
            if vector is None and plan.semantic:
                async with asyncio.timeout(self.config.embed_timeout_seconds):
                    vector = await self.embedder.embed(plan.text)
            now = self.clock.now()
            entry = CacheEntry(
                scope=plan.scope,
                key=plan.key,
                prompt=plan.text,
                response=body,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                created_at=now,
                expires_at=now + self.config.ttl_seconds,
            )
            async with asyncio.timeout(self.config.store_timeout_seconds):
                await self.store.put(entry, vector)
            self.stats.stored += 1
        except (StoreUnavailable, EmbeddingUnavailable, TimeoutError) as exc:
            self._failed("store", exc)
        except Exception as exc:  # runs after the answer was sent: nobody else would see it
            log.exception("cache store failed unexpectedly")
            self._failed("store", exc, pause=False)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait for stores in flight (tests, benchmarks, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def close(self) -> None:
        await self.flush()
        await self.store.close()


def _cache_control(headers: Mapping[str, str]) -> dict[str, float | None]:
    """Request directives that matter here: no-store, no-cache (Pragma too), max-age=N."""
    directives: dict[str, float | None] = {}
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().lower().partition("=")
        if name == "max-age":
            try:
                directives[name] = max(0.0, float(value.strip().strip('"')))
            except ValueError:
                continue
        elif name:
            directives[name] = None
    if "no-cache" in headers.get("pragma", "").lower():
        directives["no-cache"] = None
    return directives


def build_cache(config: CacheConfig, proxy: Proxy, store: VectorStore, clock: Clock) -> Cache:
    """The cache `GATEWAY_CACHE` describes, on the store the stores factory chose. Nothing connects or loads here."""
    embedder = build_embedder(config, proxy)
    log.info(
        "cache on for %s: embedder %s, store %s, similarity >= %.3f, ttl %d s",
        sorted(config.deployments),
        config.embedder,
        store.kind,
        config.similarity_threshold,
        config.ttl_seconds,
    )
    cache = Cache(config, store, embedder, clock)
    if config.judge is not None:
        cache.judge = Judge(proxy, config.judge, timeout_seconds=config.judge_timeout_seconds)
    return cache
