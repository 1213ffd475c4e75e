"""The semantic cache, measured: store lookups, local embeddings, and a hit against a miss through the gateway.

1. Embedded vector store lookup latency (p50/p99, embedding excluded) at
   10,000 and 100,000 entries in one scope (the worst case: every entry is a
   candidate), for queries that hit and queries that miss, with the recall
   of the signature pre-filter against an exact scan. The stored vectors are
   synthetic but clustered like sentence embeddings (same-topic neighbours at
   cosine 0.5 to 0.7); queries sit between the threshold and 0.99 of a stored
   one. Then the same on real embeddings: the evaluation set's prompts among
   100,000 synthetic same-topic neighbours, queried with their pair.
2. Local embedding time per prompt (all-MiniLM-L6-v2, numpy, one prompt per
   call as the gateway embeds), after the model's first load (timed apart).
3. End to end through the gateway (local host over HTTP, simulator backend
   with 150 ms to first token and 80 tokens/s): a miss, an exact hit and a
   semantic hit, one request at a time; and a miss with the cache off, to
   show what the cache adds to a miss.

Run: `python -m bench.cache_bench [--quick]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.common import ROOT, gateway, simulator
from shared.cache import guard as cacheguard
from shared.cache import minilm
from shared.clock import ManualClock
from shared.stores.protocols import CacheEntry
from shared.stores.vectors import EmbeddedVectorStore

DIM = 384
THRESHOLD = cacheguard.DEFAULT_SIMILARITY_THRESHOLD
PATH = "/openai/deployments/chat/chat/completions?api-version=2024-10-21"
EVAL_PAIRS = Path(__file__).resolve().parent / "cache_eval" / "pairs.jsonl"
HEADERS = {"api-key": "bench-subscription-key", "content-type": "application/json"}

# Paraphrase pairs written for this benchmark (not the evaluation set): the second should hit the first.
PAIRS = [
    ("How do I reset my password?", "What's the way to reset my password?"),
    ("What is the capital of Australia?", "Which city is the capital of Australia?"),
    ("How do I undo the last git commit?", "How can I undo my last git commit?"),
    ("What are the symptoms of dehydration?", "What symptoms does dehydration cause?"),
    ("How long should I boil an egg for a soft yolk?", "How long do I boil an egg to get a soft yolk?"),
    ("Explain what a Python decorator is.", "Explain what Python decorators are."),
    ("What is the difference between TCP and UDP?", "What's the difference between TCP and UDP?"),
    ("How do I convert a list to a set in Python?", "How can I convert a Python list into a set?"),
    ("What does HTTP status code 404 mean?", "What is the meaning of HTTP status code 404?"),
    ("How can I improve my sleep quality?", "How do I improve the quality of my sleep?"),
    ("What is photosynthesis?", "What is photosynthesis exactly?"),
    ("How do I center a div in CSS?", "How can I center a div with CSS?"),
    ("Who wrote Pride and Prejudice?", "Who is the author of Pride and Prejudice?"),
    ("What is the boiling point of water at sea level?", "At sea level, what is the boiling point of water?"),
    ("How do I make a cold brew coffee?", "How do you make cold brew coffee?"),
    ("What causes the seasons on Earth?", "What causes Earth's seasons?"),
    ("How do I list all Docker containers?", "How can I list all of my Docker containers?"),
    ("What is a good way to learn Spanish quickly?", "What's a good way to learn Spanish fast?"),
    ("How do I read a CSV file with pandas?", "How can I read a CSV file using pandas?"),
    ("What is the speed of light in a vacuum?", "What is the speed of light in vacuum?"),
]


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((max(50, n // 200), DIM)).astype(np.float32)
    rows = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def near(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(DIM).astype(np.float32)
    noise -= (noise @ v) * v
    noise /= np.linalg.norm(noise)
    return (cosine * v + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


async def store_latency(n: int, queries: int) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    clock = ManualClock()
    rows = clustered(n, rng)
    store = EmbeddedVectorStore(clock=clock, max_entries=n, max_bytes=1 << 34)
    body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"an answer"},"finish_reason":"stop"}]}'
    started = time.perf_counter()
    for i, row in enumerate(rows):
        now = clock.now()
        await store.put(CacheEntry("scope", f"k{i}", f"prompt {i}", body, 10, 10, now, now + 3600), row)
    put_us = (time.perf_counter() - started) / n * 1e6
    hits: list[float] = []
    misses: list[float] = []
    found = 0
    for _ in range(queries):
        target = int(rng.integers(0, n))
        query = near(rows[target], float(rng.uniform(THRESHOLD + 0.01, 0.99)), rng)
        t = time.perf_counter()
        match = await store.nearest("scope", query, THRESHOLD)
        hits.append(time.perf_counter() - t)
        exact = int(np.argmax(rows @ query))
        found += match is not None and match.entry.key == f"k{exact}"
        fresh = clustered(1, rng)[0]
        t = time.perf_counter()
        await store.nearest("scope", fresh, THRESHOLD)
        misses.append(time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(queries):
        np.argmax(rows @ fresh)  # the exact scan the pre-filter replaces, for comparison
    exact_ms = (time.perf_counter() - t) / queries * 1000
    return {
        "entries": n,
        "hit_p50_ms": percentile(hits, 0.5),
        "hit_p99_ms": percentile(hits, 0.99),
        "miss_p50_ms": percentile(misses, 0.5),
        "miss_p99_ms": percentile(misses, 0.99),
        "recall": found / queries,
        "exact_scan_ms": exact_ms,
        "put_us": put_us,
    }


async def real_prompts_recall(n: int) -> dict[str, Any]:
    """The pre-filter on real sentence embeddings, in the hardest layout: every stored prompt of the evaluation
    set surrounded by synthetic same-topic neighbours (cosine 0.55 to 0.80 to it), n entries in all, queried with
    the other prompt of each pair. Recall is agreement with an exact scan on what clears the threshold."""
    pairs = [json.loads(line) for line in EVAL_PAIRS.read_text().splitlines() if line.strip()]
    stored = minilm.embed([p["a"] for p in pairs])
    queries = minilm.embed([p["b"] for p in pairs])
    rng = np.random.default_rng(7)
    fill = [near(stored[int(rng.integers(0, len(stored)))], float(rng.uniform(0.55, 0.80)), rng) for _ in range(n)]
    rows = np.vstack([stored, np.array(fill[: n - len(stored)])]).astype(np.float32)
    clock = ManualClock()
    store = EmbeddedVectorStore(clock=clock, max_entries=n, max_bytes=1 << 34)
    for i, row in enumerate(rows):
        now = clock.now()
        await store.put(CacheEntry("scope", f"k{i}", "", b"{}", 1, 1, now, now + 3600), row)
    agree, latencies = 0, []
    for query in queries:
        t = time.perf_counter()
        match = await store.nearest("scope", query, THRESHOLD)
        latencies.append(time.perf_counter() - t)
        scores = rows @ query
        best = int(np.argmax(scores))
        expected = f"k{best}" if scores[best] >= THRESHOLD else None
        agree += (match.entry.key if match else None) == expected
    return {"queries": len(queries), "recall": agree / len(queries), "p50_ms": percentile(latencies, 0.5)}


_EMBED_TIMING = """
import json, sys, time
from shared.cache import minilm
from bench.cache_bench import PAIRS, percentile
t = time.perf_counter()
minilm.embed(["warm up: load the model"])
load_ms = (time.perf_counter() - t) * 1000
prompts = [p for pair in PAIRS for p in pair]
timings = []
for i in range(int(sys.argv[1])):
    t = time.perf_counter()
    minilm.embed([prompts[i % len(prompts)]])
    timings.append(time.perf_counter() - t)
print(json.dumps({"first_call_ms": load_ms, "p50_ms": percentile(timings, 0.5), "p99_ms": percentile(timings, 0.99)}))
"""


def embedding_time(samples: int) -> dict[str, float]:
    """In a fresh process with one BLAS thread, as the gateway runs the model (see local/host.py)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _EMBED_TIMING, str(samples)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


async def timed(session: aiohttp.ClientSession, url: str, question: str, *, stream: bool = False) -> tuple[float, str]:
    # No max_tokens: an answer cut at max_tokens ends with finish_reason "length" and is never cached.
    body: dict[str, Any] = {"messages": [{"role": "user", "content": question}]}
    if stream:
        body["stream"] = True
    started = time.perf_counter()
    async with session.post(url + PATH, data=json.dumps(body), headers=HEADERS) as resp:
        if stream:
            await resp.content.readany()  # time to first byte
            elapsed = time.perf_counter() - started
            await resp.read()
        else:
            await resp.read()
            elapsed = time.perf_counter() - started
        if resp.status != 200:
            raise RuntimeError(f"gateway answered {resp.status}")
        return elapsed, resp.headers.get("x-cache", "-")


async def end_to_end() -> dict[str, Any]:
    sim_args = ["--ttft-ms", "150", "--tps", "80", "--default-max-tokens", "20", "--embedder", "local"]
    cache = {"deployments": ["chat"], "embedder": "local", "ttl_seconds": 3600, "semantic": True}
    out: dict[str, Any] = {}
    with simulator(extra=sim_args) as sim_url:
        backends = [{"name": "sim", "endpoint": sim_url, "deployments": ["chat", "embed"],
                     "auth": {"type": "api_key", "setting": "SIM_KEY"}}]  # fmt: skip
        for label, env in (("cache on", {"GATEWAY_CACHE": json.dumps(cache)}), ("cache off", {})):
            with gateway(backends, env) as (gw_url, _):
                async with aiohttp.ClientSession() as session:
                    await timed(session, gw_url, "warm up the connection and the model")
                    misses = [await timed(session, gw_url, f"{a} (run {time.time_ns()})") for a, _ in PAIRS]
                    stream_misses = [
                        await timed(session, gw_url, f"{a} (stream {time.time_ns()})", stream=True) for a, _ in PAIRS
                    ]
                    if label == "cache off":
                        out["miss_cache_off"], out["stream_miss_cache_off"] = misses, stream_misses
                        continue
                    out["stream_miss"] = stream_misses
                    firsts = [await timed(session, gw_url, a) for a, _ in PAIRS]
                    exact = [await timed(session, gw_url, a) for a, _ in PAIRS]
                    semantic = [await timed(session, gw_url, b) for _, b in PAIRS]
                    stream_hit = [await timed(session, gw_url, a, stream=True) for a, _ in PAIRS]
                    out.update(miss=misses + firsts, exact=exact, semantic=semantic, stream_hit=stream_hit)
    return out


def summary(samples: list[tuple[float, str]]) -> str:
    """Latency per x-cache state: a paraphrase the threshold or the guard turns away is a miss, not a slow hit."""
    by_state: dict[str, list[float]] = {}
    for seconds, state in samples:
        by_state.setdefault(state, []).append(seconds)
    return "   ".join(
        f"{state} x{len(times)}: p50 {statistics.median(times) * 1000:.1f} ms, p95 {percentile(times, 0.95):.1f} ms"
        for state, times in sorted(by_state.items())
    )


async def run(quick: bool) -> None:
    queries = 200 if quick else 1000
    print(f"embedded vector store, one scope, {DIM} dimensions, threshold {THRESHOLD} ({queries} queries each)")
    print(
        f"{'entries':>8} {'hit p50':>9} {'hit p99':>9} {'miss p50':>9} {'miss p99':>9} {'recall':>7} {'exact scan':>11}"
    )
    for n in (10_000, 100_000):
        r = await store_latency(n, queries)
        print(
            f"{r['entries']:>8} {r['hit_p50_ms']:>7.3f}ms {r['hit_p99_ms']:>7.3f}ms {r['miss_p50_ms']:>7.3f}ms "
            f"{r['miss_p99_ms']:>7.3f}ms {r['recall']:>7.3f} {r['exact_scan_ms']:>9.3f}ms"
            f"   (put {r['put_us']:.0f} us/entry)"
        )
    r = await real_prompts_recall(100_000)
    print(
        f"real prompts ({r['queries']} evaluation pairs) among 100,000 same-topic neighbours: "
        f"agreement with an exact scan {r['recall']:.3f}, lookup p50 {r['p50_ms']:.3f} ms"
    )
    e = embedding_time(100 if quick else 400)
    print(
        f"\nlocal embedding (all-MiniLM-L6-v2, numpy), one prompt per call: p50 {e['p50_ms']:.1f} ms, "
        f"p99 {e['p99_ms']:.1f} ms; first call (loads the model) {e['first_call_ms']:.0f} ms"
    )
    print("\nthrough the gateway, one request at a time, simulator 150 ms to first token, 80 tokens/s, 20 tokens:")
    e2e = await end_to_end()
    print(f"  miss, cache off      {summary(e2e['miss_cache_off'])}")
    print(f"  miss, cache on       {summary(e2e['miss'])}")
    print(f"  exact hit            {summary(e2e['exact'])}")
    print(f"  semantic hit         {summary(e2e['semantic'])}")
    print(f"  streamed hit (TTFB)  {summary(e2e['stream_hit'])}")
    print(f"  streamed miss (TTFB), cache off  {summary(e2e['stream_miss_cache_off'])}")
    print(f"  streamed miss (TTFB), cache on   {summary(e2e['stream_miss'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer queries and samples")
    args = parser.parse_args()
    asyncio.run(run(args.quick))


if __name__ == "__main__":
    main()
