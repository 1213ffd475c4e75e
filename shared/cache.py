"""The semantic cache stage: scope and key, lookup (exact, then semantic behind the guard), hits, and what gets stored.

Entries match only within a scope (subscription, deployment, system messages,
earlier turns, tools, parameters); only complete, unfiltered answers are
stored; a cache failure never fails a request, it is logged, counted and
bypassed. The README's cache section describes the behaviour in full.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import os
import re
import secrets
import unicodedata
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared import cacheguard, cacheverify
from shared.api import ApiCall, wants_usage
from shared.clock import Clock
from shared.embedders import (
    LOCAL,
    LOCAL_DIMENSIONS,
    Embedder,
    LocalEmbedder,
    PoolEmbedder,
)
from shared.errors import ConfigError, EmbeddingUnavailable, StoreUnavailable
from shared.models import Caller, GatewayResponse, Operation, Usage
from shared.stores.vectors import CacheEntry, EmbeddedVectorStore, VectorStore

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.proxy import Proxy, SessionProvider
    from shared.stores.vectors import Vector

log = logging.getLogger("gateway.cache")

HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"

# Sampling parameters that change the answer, in the scope unless `vary_by` says otherwise.
DEFAULT_VARY_BY = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "logit_bias",
    "reasoning_effort",
)
# Parameters that change the shape of the answer: always in the scope.
SHAPE_PARAMETERS = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "modalities",
)
SYSTEM_ROLES = frozenset({"system", "developer"})
MAX_RESPONSE_BYTES = 1024 * 1024  # well under a Cosmos DB item's 2 MB
# all-MiniLM-L6-v2 reads 256 word pieces and drops the rest: two long prompts that differ only past
# that point would embed alike. Longer lookup texts are matched exactly or not at all.
LOCAL_SEMANTIC_MAX_CHARS = 800
POOL_SEMANTIC_MAX_CHARS = 16_000
FAILURE_PAUSE_SECONDS = 5.0
_REPLAY_PIECE = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """`GATEWAY_CACHE`, parsed. The README documents each field."""

    deployments: frozenset[str]
    embedder: str = LOCAL
    dimensions: int = LOCAL_DIMENSIONS
    send_dimensions: bool = False
    similarity_threshold: float = cacheverify.DEFAULT_SIMILARITY_THRESHOLD
    ttl_seconds: int = 3600
    shared_scope: bool = False
    opt_out_subscriptions: frozenset[str] = frozenset()
    ignore_system_messages: bool = False
    lookup_messages: int = 1
    vary_by: tuple[str, ...] = DEFAULT_VARY_BY
    cache_tool_calls: bool = False
    semantic: bool = True
    guard: bool = True
    verify: bool = True  # the structural check after the guard (shared.cacheverify); off: the guard alone
    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    store_timeout_seconds: float = 1.0
    embed_timeout_seconds: float = 10.0
    vector_index: str = "quantizedFlat"

    @property
    def semantic_max_chars(self) -> int:
        return LOCAL_SEMANTIC_MAX_CHARS if self.embedder == LOCAL else POOL_SEMANTIC_MAX_CHARS

    @staticmethod
    def parse(raw: Mapping[str, Any], deployments: frozenset[str]) -> CacheConfig:
        """Validate the `GATEWAY_CACHE` object; `ConfigError` lists every problem."""
        return _ConfigParser(raw, deployments).parse()


class _ConfigParser:
    def __init__(self, raw: Mapping[str, Any], deployments: frozenset[str]) -> None:
        self.raw = raw
        self.known = deployments
        self.problems: list[str] = []

    def _number(self, key: str, default: float, lo: float, hi: float, *, integer: bool = False) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            self.problems.append(f"GATEWAY_CACHE.{key}: a {'whole ' if integer else ''}number (got {value!r})")
            return default
        if not lo <= value <= hi:
            self.problems.append(f"GATEWAY_CACHE.{key}: between {lo:g} and {hi:g} (got {value!r})")
            return default
        return float(value)

    def _flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.problems.append(f"GATEWAY_CACHE.{key}: true or false (got {value!r})")
            return default
        return value

    def _names(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problems.append(f"GATEWAY_CACHE.{key}: a list of names (got {value!r})")
            return default
        return tuple(value)

    def parse(self) -> CacheConfig:
        raw, problems = self.raw, self.problems
        if "score_threshold" in raw or "threshold" in raw:
            problems.append(
                "GATEWAY_CACHE: use similarity_threshold, a cosine similarity where higher is stricter "
                "(not APIM's score-threshold, a distance where lower is stricter)"
            )
        known_fields = set(CacheConfig.__dataclass_fields__) - {"shared_scope", "send_dimensions"} | {"scope"}
        for key in sorted(set(raw) - known_fields - {"score_threshold", "threshold"}):
            problems.append(f"GATEWAY_CACHE: unknown field {key!r}")
        deployments = self._names("deployments", ())
        if not deployments:
            problems.append("GATEWAY_CACHE.deployments: required, the chat deployments the cache serves")
        for name in deployments:
            if name not in self.known:
                problems.append(f"GATEWAY_CACHE.deployments: {name!r} is not a deployment of GATEWAY_BACKENDS")
        embedder = raw.get("embedder", LOCAL)
        if not isinstance(embedder, str) or not embedder:
            problems.append('GATEWAY_CACHE.embedder: "local" or the name of an embedding deployment')
            embedder = LOCAL
        elif embedder != LOCAL and embedder not in self.known:
            problems.append(f"GATEWAY_CACHE.embedder: {embedder!r} is neither 'local' nor a deployment")
        dimensions = LOCAL_DIMENSIONS if embedder == LOCAL else 1536
        if "dimensions" in raw:
            dimensions = int(self._number("dimensions", dimensions, 16, 4096, integer=True))
            if embedder == LOCAL and dimensions != LOCAL_DIMENSIONS:
                problems.append(f"GATEWAY_CACHE.dimensions: the local model has {LOCAL_DIMENSIONS}")
        scope = raw.get("scope", "subscription")
        if scope not in ("subscription", "shared"):
            problems.append(f'GATEWAY_CACHE.scope: "subscription" or "shared" (got {scope!r})')
        index = raw.get("vector_index", "quantizedFlat")
        if index not in ("quantizedFlat", "diskANN"):
            problems.append(f'GATEWAY_CACHE.vector_index: "quantizedFlat" or "diskANN" (got {index!r})')
        base = CacheConfig(frozenset())
        verify = self._flag("verify", True)
        # Each check has the threshold its curve was read from (bench/cache_eval/curve.md).
        threshold = base.similarity_threshold if verify else cacheguard.DEFAULT_SIMILARITY_THRESHOLD
        config = CacheConfig(
            deployments=frozenset(deployments),
            embedder=embedder,
            dimensions=dimensions,
            send_dimensions=embedder != LOCAL and "dimensions" in raw,
            # Below 0.5 cosine, sentences on different subjects match: almost surely a distance
            # written where a similarity belongs.
            similarity_threshold=self._number("similarity_threshold", threshold, 0.5, 1.0),
            ttl_seconds=int(self._number("ttl_seconds", base.ttl_seconds, 1, 30 * 86400, integer=True)),
            shared_scope=scope == "shared",
            opt_out_subscriptions=frozenset(self._names("opt_out_subscriptions", ())),
            ignore_system_messages=self._flag("ignore_system_messages", False),
            lookup_messages=int(self._number("lookup_messages", 1, 1, 100, integer=True)),
            vary_by=self._names("vary_by", DEFAULT_VARY_BY),
            cache_tool_calls=self._flag("cache_tool_calls", False),
            semantic=self._flag("semantic", True),
            guard=self._flag("guard", True),
            verify=verify,
            max_entries=int(self._number("max_entries", base.max_entries, 1, 10_000_000, integer=True)),
            max_bytes=int(self._number("max_bytes", base.max_bytes, 1024, 1 << 40, integer=True)),
            store_timeout_seconds=self._number("store_timeout_seconds", base.store_timeout_seconds, 0.01, 60),
            embed_timeout_seconds=self._number("embed_timeout_seconds", base.embed_timeout_seconds, 0.01, 120),
            vector_index=index if index in ("quantizedFlat", "diskANN") else "quantizedFlat",
        )
        if problems:
            raise ConfigError(problems)
        return config


@dataclass(slots=True)
class CacheStats:
    """Counters since start, for metrics and tests."""

    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    bypasses: int = 0
    guard_rejections: int = 0
    guard_reasons: dict[str, int] = field(default_factory=dict)  # shared.cacheverify.REASONS -> count
    failures: int = 0
    verify_failures: int = 0
    stored: int = 0
    not_stored: dict[str, int] = field(default_factory=dict)  # reason -> count


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a request's answer would be looked up and stored."""

    scope: str
    key: str
    text: str  # the lookup text (normalised trailing messages), compared by the guard
    semantic: bool  # the text may be embedded and matched by similarity
    vector: Vector | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Lookup:
    """The cache's answer for one request: HIT (with the entry), MISS (with where to store) or BYPASS."""

    state: str
    reason: str = ""
    plan: Plan | None = None
    entry: CacheEntry | None = None
    similarity: float | None = None  # semantic hits only
    age: float = 0.0
    check: str = ""  # the verification of a semantic candidate: "pass", a cacheverify reason, or "unavailable"

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


def _normalise(text: str) -> str:
    """What never changes a prompt's meaning: Unicode composition, line endings, surrounding space.

    Inner whitespace stays: in code and YAML indentation is meaning.
    """
    return unicodedata.normalize("NFC", text).replace("\r\n", "\n").strip()


def _content(message: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(canonical content for hashing, its plain text or None when it has non-text parts)."""
    content = message.get("content")
    if content is None:
        return None, ""
    if isinstance(content, str):
        text = _normalise(content)
        return text, text
    if isinstance(content, list):
        texts: list[str] = []
        canonical: list[Any] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(_normalise(part["text"]))
                canonical.append(texts[-1])
            else:
                return content, None
        return canonical, "\n".join(texts)
    return content, None


def _canonical(message: Mapping[str, Any]) -> dict[str, Any]:
    content, _ = _content(message)
    out = {k: v for k, v in message.items() if k != "content"}
    out["content"] = content
    return out


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Cache:
    def __init__(self, config: CacheConfig, store: VectorStore, embedder: Embedder, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.embedder = embedder
        self.clock = clock
        self.stats = CacheStats()
        # Every semantic candidate passes this before it is served; replaceable in tests.
        self.verifier: Callable[[str, str], cacheverify.Verdict] = cacheverify.verify
        self._paused_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def serves(self, call: ApiCall) -> bool:
        return call.operation is Operation.CHAT and call.deployment in self.config.deployments

    # ---- lookup

    def plan(self, caller: Caller, call: ApiCall) -> Plan | str:
        """The scope and key of a request, or why it cannot be cached."""
        body, config = call.body, self.config
        n = body.get("n", 1)
        if n != 1:
            return "n > 1"
        if body.get("logprobs") is True:
            return "logprobs requested"
        modalities = body.get("modalities")
        if modalities is not None and modalities != ["text"]:
            return "non-text output"
        messages: list[dict[str, Any]] = body["messages"]
        system = [m for m in messages if m.get("role") in SYSTEM_ROLES]
        turns = [m for m in messages if m.get("role") not in SYSTEM_ROLES]
        if not turns:
            return "no user message"
        window, history = turns[-config.lookup_messages :], turns[: -config.lookup_messages]
        texts = [_content(m)[1] for m in window]
        scope = _digest(
            {
                "v": 1,
                "subscription": None if config.shared_scope else caller.subscription_id,
                "deployment": call.deployment,
                "system": [] if config.ignore_system_messages else [_canonical(m) for m in system],
                "history": [_canonical(m) for m in history],
                "shape": {k: body[k] for k in SHAPE_PARAMETERS if k in body},
                "sampling": {k: body[k] for k in config.vary_by if k in body},
            }
        )[:40]
        key = _digest([_canonical(m) for m in window])
        text = "\n".join(t for t in texts if t) if all(t is not None for t in texts) else ""
        # Only a question is matched by meaning; a window ending in a tool result or an assistant turn is not.
        semantic = (
            config.semantic
            and window[-1].get("role") == "user"
            and bool(text)
            and len(text) <= config.semantic_max_chars
        )
        return Plan(scope, key, text, semantic)

    async def lookup(self, caller: Caller, call: ApiCall, headers: Mapping[str, str]) -> Lookup | None:
        """None when the cache does not serve this request at all (another deployment, embeddings)."""
        if not self.serves(call):
            return None
        try:
            lookup = await self._lookup(caller, call, headers)
        except (StoreUnavailable, EmbeddingUnavailable, TimeoutError) as exc:
            lookup = self._failed("lookup", exc)
        except Exception as exc:  # a cache bug must not fail the request: logged with its trace, bypassed
            log.exception("cache lookup failed unexpectedly")
            lookup = self._failed("lookup", exc)
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
        now = self.clock.now()
        if now < self._paused_until:
            return _bypass("cache unavailable")
        max_age = directives.get("max-age")
        if max_age == 0:
            return Lookup(MISS, "refresh", plan)  # the caller asked for a fresh answer; it replaces the old
        return await self._find(plan, max_age)

    def _failed(self, what: str, exc: BaseException) -> Lookup:
        self.stats.failures += 1
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
            verified = self._verify(plan.text, match.entry.prompt)
            if verified is None:
                # Verification could not say: never a hit. Not stored either, as for any other bypass.
                return Lookup(BYPASS, "verification unavailable", check=cacheverify.UNAVAILABLE)
            if not verified.ok:
                reason = verified.reason or "guard"
                self.stats.guard_rejections += 1
                self.stats.guard_reasons[reason] = self.stats.guard_reasons.get(reason, 0) + 1
                log.info("cache verification rejected a match at similarity %.3f: %s", match.similarity, reason)
                return Lookup(MISS, "guard", plan, similarity=None, check=reason)
            check = "pass"
        self.stats.semantic_hits += 1
        return Lookup(HIT, "semantic", plan, match.entry, round(match.similarity, 4), age, check=check)

    def _verify(self, new: str, stored: str) -> cacheverify.Verdict | None:
        """The candidate's verdict, or None when the check itself failed (logged with its trace)."""
        try:
            if self.config.verify:
                return self.verifier(new, stored)
            guard = cacheguard.check(new, stored)
            return cacheverify.Verdict(guard.ok, guard.reason)
        except Exception:  # a bug in a check must not serve an answer: the lookup bypasses
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
        return GatewayResponse(200, out, stream=_replay(answer, include_usage=wants_usage(call.body)))

    # ---- stores

    def save(self, lookup: Lookup, status: int, body: bytes, answer: Mapping[str, Any] | None = None) -> None:
        """Keep a backend's unary answer if it may be cached; in the background, failures logged.

        `answer` is the body already parsed (the pipeline parses it once for the meter); parsed here if not given.
        """
        if not lookup.storable or lookup.plan is None:
            return
        if status != 200:
            self._not_stored(f"status {status}")
            return
        if answer is None:
            try:
                answer = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._not_stored("unreadable body")
                return
        reason = self._unstorable(answer, len(body))
        if reason:
            self._not_stored(reason)
            return
        usage = answer.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        tokens = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        self._spawn(self._put(lookup.plan, body, tokens))

    def recorder(self, lookup: Lookup | None) -> StreamRecorder | None:
        """Collects a streamed miss as it is forwarded; `complete()` stores it once the stream has ended well."""
        if lookup is None or not lookup.storable or lookup.plan is None:
            return None
        return StreamRecorder(self, lookup.plan)

    def _unstorable(self, answer: Any, size: int) -> str | None:
        if size > MAX_RESPONSE_BYTES:
            return "too large"
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            return "not a chat completion"
        choices = answer["choices"]
        if len(choices) != 1 or not isinstance(choices[0], dict):
            return "not one choice"
        choice = choices[0]
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        finish = choice.get("finish_reason")
        calls_tools = bool(message.get("tool_calls") or message.get("function_call"))
        calls_tools = calls_tools or finish in ("tool_calls", "function_call")
        if calls_tools and not self.config.cache_tool_calls:
            return "tool call"
        if finish != "stop" and not (calls_tools and finish in ("tool_calls", "function_call")):
            return f"finish_reason {finish}"
        if message.get("refusal"):
            return "refusal"
        if _filtered(choice.get("content_filter_results")) or any(
            isinstance(p, dict) and _filtered(p.get("content_filter_results"))
            for p in answer.get("prompt_filter_results") or []
        ):
            return "content filtered"
        return None

    def _not_stored(self, reason: str) -> None:
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
            self._failed("store", exc)

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


class StreamRecorder:
    """Reassembles a forwarded chat stream into the chat.completion it stands for."""

    def __init__(self, cache: Cache, plan: Plan) -> None:
        self._cache = cache
        self._plan = plan
        self._buffer = b""
        self._size = 0
        self._head: dict[str, Any] = {}
        self._content: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._refused = False
        self._filtered = False
        self._broken: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        self._size += len(chunk)
        if self._size > 4 * MAX_RESPONSE_BYTES:  # stream framing is verbose; the assembled answer is checked too
            self._broken = "too large"
            return
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            self._event(event)

    def _event(self, event: bytes) -> None:
        data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return
        try:
            payload = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._broken = "unreadable event"
            return
        if not isinstance(payload, dict):
            return
        if "error" in payload:
            self._broken = "error event"
            return
        for key in ("id", "model", "system_fingerprint", "created"):
            if payload.get(key) and key not in self._head:
                self._head[key] = payload[key]
        prompt_filters = payload.get("prompt_filter_results") or []
        if any(isinstance(p, dict) and _filtered(p.get("content_filter_results")) for p in prompt_filters):
            self._filtered = True
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:
                self._broken = "not one choice"
                return
            self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        if _filtered(choice.get("content_filter_results")):
            self._filtered = True
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("content"), str):
            self._content.append(delta["content"])
        if delta.get("refusal"):
            self._refused = True
        if delta.get("function_call"):
            self._broken = "function call"
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            slot = self._tool_calls.setdefault(
                int(call.get("index", 0)), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                slot["id"] = call["id"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""

    def complete(self, usage: Usage | None) -> None:
        """The stream ended with [DONE] and no error: store what it said, if it may be cached."""
        cache = self._cache
        reason = (
            self._broken or ("refusal" if self._refused else None) or ("content filtered" if self._filtered else None)
        )
        if reason:
            cache._not_stored(reason)
            return
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content) or None}
        if self._tool_calls:
            message["tool_calls"] = [self._tool_calls[i] for i in sorted(self._tool_calls)]
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": self._finish, "logprobs": None}
        tokens = usage or Usage()
        answer = {
            "id": self._head.get("id", ""),
            "object": "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "system_fingerprint": self._head.get("system_fingerprint"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": tokens.prompt_tokens,
                "completion_tokens": tokens.completion_tokens,
                "total_tokens": tokens.total_tokens,
            },
        }
        body = json.dumps(answer, separators=(",", ":")).encode()
        reason = cache._unstorable(answer, len(body))
        if reason:
            cache._not_stored(reason)
            return
        cache._spawn(cache._put(self._plan, body, tokens))


def _filtered(results: Any) -> bool:
    """Azure's content-filter annotations: any category marked filtered."""
    if not isinstance(results, dict):
        return False
    return any(isinstance(v, dict) and v.get("filtered") is True for v in results.values())


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


async def _replay(answer: dict[str, Any], *, include_usage: bool) -> AsyncIterator[bytes]:
    """A stored answer as the chunks a backend would have streamed, then (if asked) a zero usage chunk and [DONE]."""
    choice = answer["choices"][0]
    message = choice.get("message") or {}
    head = {
        "id": answer["id"],
        "object": "chat.completion.chunk",
        "created": answer["created"],
        "model": answer.get("model", ""),
        "system_fingerprint": answer.get("system_fingerprint"),
    }
    extra = {"usage": None} if include_usage else {}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    pieces = _REPLAY_PIECE.findall(message.get("content") or "")
    for at in range(0, len(pieces), 8):  # a few words per event, as a model would send them
        yield event({"content": "".join(pieces[at : at + 8])})
    for index, call in enumerate(message.get("tool_calls") or []):
        yield event({"tool_calls": [{"index": index, **call}]})
    yield event({}, choice.get("finish_reason") or "stop")
    if include_usage:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        yield b"data: " + json.dumps({**head, "choices": [], "usage": usage}, separators=(",", ":")).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def build_cache(settings: Settings, proxy: Proxy, session: SessionProvider, clock: Clock) -> Cache | None:
    """The cache `GATEWAY_CACHE` describes, or None when it is not set. Nothing connects or loads here."""
    if settings.cache is None:
        return None
    config = CacheConfig.parse(settings.cache, settings.deployments)
    embedder: Embedder
    if config.embedder == LOCAL:
        from shared.minilm import MODEL_PACKAGE  # noqa: PLC0415 - cheap: the model itself loads on first use

        if importlib.util.find_spec(MODEL_PACKAGE) is None:
            raise ConfigError(
                [
                    f"GATEWAY_CACHE.embedder: 'local' needs the model package ({MODEL_PACKAGE}, installed by "
                    "`make deps` with --no-deps); in Azure use an embedding deployment of GATEWAY_BACKENDS"
                ]
            )
        # One BLAS thread: the model's matrices are small, and OpenBLAS's own pool fights the event loop
        # for the cores (measured on 2 cores: first embeddings in a worker thread took 400 ms, not 5 ms).
        # Read when numpy loads, which in the gateway is later than this.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        embedder = LocalEmbedder()
    else:
        embedder = PoolEmbedder(
            proxy, config.embedder, dimensions=config.dimensions, send_dimensions=config.send_dimensions
        )
    store: VectorStore
    if settings.cosmos_endpoint:
        from shared.stores.cosmos import CosmosVectorStore  # noqa: PLC0415 - the Cosmos SDK loads only when used

        store = CosmosVectorStore(
            endpoint=settings.cosmos_endpoint,
            database=settings.cosmos_database,
            container=settings.cosmos_container,
            dimensions=config.dimensions,
            ttl_seconds=config.ttl_seconds,
            clock=clock,
            key=settings.cosmos_key,
            client_id=settings.cosmos_client_id,
            session=session,
            index_type=config.vector_index,
        )
    else:
        store = EmbeddedVectorStore(clock=clock, max_entries=config.max_entries, max_bytes=config.max_bytes)
    log.info(
        "cache on for %s: embedder %s, store %s, similarity >= %.3f, ttl %d s",
        sorted(config.deployments),
        config.embedder,
        store.kind,
        config.similarity_threshold,
        config.ttl_seconds,
    )
    return Cache(config, store, embedder, clock)
