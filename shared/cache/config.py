"""`GATEWAY_CACHE`, parsed into a typed `CacheConfig`; every problem is listed, with the others of `load_settings`.

A leaf module (it imports only `shared.errors`), so `shared.config` can parse
the cache's settings without loading the cache stage, the guard or numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import ConfigError

LOCAL = "local"  # the built-in embedder, all-MiniLM-L6-v2
LOCAL_DIMENSIONS = 384
# The cosine similarity above which the semantic cache considers a stored prompt at all, for all-MiniLM-L6-v2
# with the near-miss guard on: the lowest threshold whose false hits stay at or below 1 % on
# bench/cache_eval/pairs.jsonl. bench/cache_eval/curve.md records the curve it was read from;
# `python -m bench.cache_eval.evaluate` redraws it.
DEFAULT_SIMILARITY_THRESHOLD = 0.81
# The same with verification on (shared.cache.verify, the default): chosen on development data only
# (bench/cache_eval/verify_dev.jsonl, pairs.jsonl and the burned held-out 1 and 2) by a rule that puts safety first:
# the lowest threshold with no false hit on any of them (0.77; the pair that needs it above 0.76 is a question
# about the same subject asked differently, "how do I take a screenshot on a Mac" / "where are screenshots saved",
# 0.761), plus a margin of 0.02, because both earlier held-out rounds leaked just above their development data's
# zero point (0.771, 0.787). A missed paraphrase costs one backend call. `python -m bench.cache_eval.verification`
# shows the curve.
VERIFIED_SIMILARITY_THRESHOLD = 0.79
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
# all-MiniLM-L6-v2 reads 256 word pieces and drops the rest: two long prompts that differ only past
# that point would embed alike. Longer lookup texts are matched exactly or not at all.
LOCAL_SEMANTIC_MAX_CHARS = 800
POOL_SEMANTIC_MAX_CHARS = 16_000
VECTOR_INDEXES = ("quantizedFlat", "diskANN")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """`GATEWAY_CACHE`, parsed. The README documents each field."""

    deployments: frozenset[str]
    embedder: str = LOCAL
    dimensions: int = LOCAL_DIMENSIONS
    send_dimensions: bool = False
    similarity_threshold: float = VERIFIED_SIMILARITY_THRESHOLD
    ttl_seconds: int = 3600
    shared_scope: bool = False
    opt_out_subscriptions: frozenset[str] = frozenset()
    ignore_system_messages: bool = False
    lookup_messages: int = 1
    vary_by: tuple[str, ...] = DEFAULT_VARY_BY
    cache_tool_calls: bool = False
    # A similar prompt is served only when the verification proves it asks the same (shared.cache.proof): no false
    # hit of 396 on held-out pairs written before the checks were frozen (README, "The verification, measured").
    # False: exact matches only.
    semantic: bool = True
    guard: bool = True
    verify: bool = True  # the structural check after the guard (shared.cache.verify); false: the guard alone
    # Optional last check (shared.cache.judge): a chat deployment of GATEWAY_BACKENDS asked "same question?" for each
    # candidate the local checks pass; None (the default): no call. Its own timeout; any failure is a miss.
    judge: str | None = None
    judge_timeout_seconds: float = 2.0
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
        """Validate the `GATEWAY_CACHE` object alone; `ConfigError` lists every problem."""
        problems: list[str] = []
        config = parse_cache_config(raw, deployments, problems)
        if problems or config is None:
            raise ConfigError(problems)
        return config


def parse_cache_config(raw: Any, deployments: frozenset[str], problems: list[str]) -> CacheConfig | None:
    """The `GATEWAY_CACHE` JSON value as a `CacheConfig`, adding each problem found to `problems`.

    `deployments` are those of `GATEWAY_BACKENDS`, which the cache's deployments and embedder must name.
    """
    if not isinstance(raw, dict):
        problems.append("GATEWAY_CACHE: must be a JSON object")
        return None
    return _Parser(raw, deployments, problems).parse()


class _Parser:
    def __init__(self, raw: Mapping[str, Any], deployments: frozenset[str], problems: list[str]) -> None:
        self.raw = raw
        self.known = deployments
        self.problems = problems

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
        if index not in VECTOR_INDEXES:
            problems.append(f'GATEWAY_CACHE.vector_index: "quantizedFlat" or "diskANN" (got {index!r})')
        judge = raw.get("judge")
        if judge is not None and (not isinstance(judge, str) or judge not in self.known):
            problems.append(f"GATEWAY_CACHE.judge: the name of a chat deployment of GATEWAY_BACKENDS (got {judge!r})")
            judge = None
        base = CacheConfig(frozenset())
        verify = self._flag("verify", True)
        # Each check has the threshold its own curve was read from (bench/cache_eval/curve.md).
        threshold = VERIFIED_SIMILARITY_THRESHOLD if verify else DEFAULT_SIMILARITY_THRESHOLD
        return CacheConfig(
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
            judge=judge,
            judge_timeout_seconds=self._number("judge_timeout_seconds", base.judge_timeout_seconds, 0.05, 30),
            max_entries=int(self._number("max_entries", base.max_entries, 1, 10_000_000, integer=True)),
            max_bytes=int(self._number("max_bytes", base.max_bytes, 1024, 1 << 40, integer=True)),
            store_timeout_seconds=self._number("store_timeout_seconds", base.store_timeout_seconds, 0.01, 60),
            embed_timeout_seconds=self._number("embed_timeout_seconds", base.embed_timeout_seconds, 0.01, 120),
            vector_index=index if index in VECTOR_INDEXES else "quantizedFlat",
        )
