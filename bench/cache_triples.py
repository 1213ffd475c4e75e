"""The semantic cache tried as a new user would: question, paraphrase and minimal pair, through a gateway process.

For each triple of a triples file (bench/cache_eval/triples_holdout6.jsonl by default) a fresh subscription is made
(its own cache scope), then three chat completions are asked with the official `openai` SDK against a gateway
started as `make run` starts it (`python -m local.host`, the local embedder, the default cache settings) over one
simulator backend: the question (a MISS, stored), the minimal pair (the same question with one content word or
phrase swapped: a HIT would serve another question's answer) and the paraphrase (a HIT is a saving). Printed: per
kind, minimal pairs served from the cache (false hits) with the one-sided 95 % Clopper-Pearson upper bound, and
paraphrases served, with every false hit listed.

Run: `python -m bench.cache_triples [--file PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from openai import AsyncAzureOpenAI

from bench.cache_eval.verification import upper_bound
from bench.common import create_subscription, gateway, simulator

HERE = Path(__file__).resolve().parent / "cache_eval"
TRIPLES = HERE / "triples_holdout6.jsonl"
ADMIN_KEY = "cache-triples-admin-key"
SETTINGS = {
    "SIM_KEY": "bench-key",
    "GATEWAY_ADMIN_KEY": ADMIN_KEY,
    # As `make run`: the local embedder, everything else at its default (similar prompts included).
    "GATEWAY_CACHE": json.dumps({"deployments": ["chat"], "embedder": "local"}),
}


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


async def _ask(url: str, key: str, question: str) -> str:
    client = AsyncAzureOpenAI(azure_endpoint=url, api_key=key, api_version="2024-10-21", max_retries=0)
    async with client:
        raw = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": question}]
        )
        raw.parse()
        return raw.headers.get("x-cache", "-")


async def run(path: Path) -> dict[str, Any]:
    triples = load(path)
    sim_args = ["--default-max-tokens", "20", "--embedder", "local"]
    results: list[dict[str, str]] = []
    with simulator(extra=sim_args) as sim_url:
        backends = [{"name": "sim", "endpoint": sim_url, "deployments": ["chat", "embed"],
                     "auth": {"type": "api_key", "setting": "SIM_KEY"}}]  # fmt: skip
        with gateway(backends, SETTINGS) as (url, _):
            async with aiohttp.ClientSession() as session:
                for n, t in enumerate(triples):
                    key = await create_subscription(session, url, ADMIN_KEY, f"triple-{n}")
                    first = await _ask(url, key, t["question"])
                    # The background store of the answer: give it a moment before the next lookup.
                    await asyncio.sleep(0.2)
                    minimal = await _ask(url, key, t["minimal"])
                    await asyncio.sleep(0.2)
                    paraphrase = await _ask(url, key, t["paraphrase"])
                    results.append({**t, "first": first, "minimal_cache": minimal, "paraphrase_cache": paraphrase})
    return {"file": str(path), "results": results}


def report(out: dict[str, Any]) -> str:
    results: list[dict[str, str]] = out["results"]
    kinds = sorted(Counter(r["kind"] for r in results))
    lines = [
        f"{out['file']}: {len(results)} triples through a gateway process (openai SDK, local embedder)",
        "kind          triples  minimal pairs served (false hits)  upper bound  paraphrases served",
    ]
    for kind in [*kinds, "all"]:
        rows = [r for r in results if kind in ("all", r["kind"])]
        false_hits = sum(r["minimal_cache"] == "HIT" for r in rows)
        paraphrases = sum(r["paraphrase_cache"] == "HIT" for r in rows)
        lines.append(
            f"{kind:13s} {len(rows):7d}  {false_hits:33d}  {100 * upper_bound(false_hits, len(rows)):10.1f} %"
            f"  {paraphrases:4d} ({100 * paraphrases / max(len(rows), 1):.1f} %)"
        )
    not_miss = [r for r in results if r["first"] != "MISS"]
    lines += [f"first question not a MISS: {len(not_miss)}"]
    served = [r for r in results if r["minimal_cache"] == "HIT"]
    lines += [f"FALSE HIT {r['kind']}: {r['question']} / {r['minimal']}" for r in served]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--file", type=Path, default=TRIPLES)
    args = parser.parse_args()
    print(report(asyncio.run(run(args.file))))


if __name__ == "__main__":
    main()
