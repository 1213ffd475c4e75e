"""Local embedding cost: all-MiniLM-L6-v2 in numpy (shared.cache.minilm), load time and time per prompt.

Prints the module import time, the model's first load (weights and tokenizer read from the installed package),
then wall and process CPU time per prompt over distinct real prompts (bench/cache_eval/pairs.jsonl): one prompt
per call, as the gateway embeds a lookup, and batches of 16. CPU time above wall time means BLAS used more than
one core; `OPENBLAS_NUM_THREADS=1` pins it to one.

Run: `python -m bench.embed_bench [--prompts 200]`
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

PAIRS = Path(__file__).resolve().parent / "cache_eval" / "pairs.jsonl"


def _prompts(n: int) -> list[str]:
    """n distinct prompts of the evaluation set, the same ones every run."""
    texts: set[str] = set()
    for line in PAIRS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            texts.update((row["a"], row["b"]))
    ordered = sorted(texts)
    return random.Random(0).sample(ordered, min(n, len(ordered)))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed_calls(batches: list[list[str]]) -> tuple[list[float], float, float]:
    """Wall seconds of each call, and total wall and CPU seconds."""
    from shared.cache import minilm  # noqa: PLC0415 - imported by main first, timed there

    walls = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for batch in batches:
        start = time.perf_counter()
        minilm.embed(batch)
        walls.append(time.perf_counter() - start)
    return walls, time.perf_counter() - wall0, time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    args = parser.parse_args()

    start = time.perf_counter()
    from shared.cache import minilm  # noqa: PLC0415 - the import itself is measured

    imported = time.perf_counter() - start
    cpu0, start = time.process_time(), time.perf_counter()
    model = minilm.load()
    load_wall, load_cpu = time.perf_counter() - start, time.process_time() - cpu0
    loaded = f"model load: {load_wall * 1e3:.0f} ms wall, {load_cpu * 1e3:.0f} ms CPU"
    print(f"import shared.cache.minilm: {imported * 1e3:.1f} ms; {loaded}")

    texts = _prompts(args.prompts)
    tokens = [int(model.tokenize([t])[1].sum()) for t in texts]
    print(f"{len(texts)} distinct prompts, {statistics.mean(tokens):.1f} tokens on average (max {max(tokens)})")
    minilm.embed(texts[:8])  # first-call allocations out of the figures

    walls, wall, cpu = _timed_calls([[t] for t in texts])
    print(
        f"one prompt per call: p50 {_percentile(walls, 0.5) * 1e3:.2f} ms, "
        f"p99 {_percentile(walls, 0.99) * 1e3:.2f} ms; "
        f"mean {wall / len(texts) * 1e3:.2f} ms wall, {cpu / len(texts) * 1e3:.2f} ms CPU per prompt"
    )
    batches = [texts[i : i + 16] for i in range(0, len(texts), 16)]
    walls, wall, cpu = _timed_calls(batches)
    print(
        f"batches of 16: p50 {_percentile(walls, 0.5) * 1e3:.1f} ms, "
        f"p99 {_percentile(walls, 0.99) * 1e3:.1f} ms per batch; "
        f"{wall / len(texts) * 1e3:.2f} ms wall, {cpu / len(texts) * 1e3:.2f} ms CPU per prompt"
    )


if __name__ == "__main__":
    main()
