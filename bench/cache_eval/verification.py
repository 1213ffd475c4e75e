"""The evidence behind the semantic cache's verification (`shared.cache.verify`): per class, hits and false hits.

Four parts, in the order they were used:

1. development: verify_dev.jsonl (written for this check) and pairs.jsonl (the guard's set): looked at freely;
2. held-out 1: verify_holdout.jsonl, written and committed before the verifier existed, its hash frozen in
   tests/test_cache_eval.py, evaluated once with the first verifier frozen (2 false hits of 252). Once seen it was
   burned: development data since;
3. held-out 2: verify_holdout2.jsonl, written and committed alone before the second round of changes, evaluated
   once with the second verifier frozen (3 false hits of 279). Burned too: the third round was tuned on it;
4. held-out 3: verify_holdout3.jsonl, written and committed alone (without opening the verifier's or the guard's
   rules) before the third round, its hash frozen in the test, evaluated once with the third verifier frozen (the
   commit that says "frozen before held-out 3").

Hard negatives come in nine classes: an opposite the guard's list does not know, a sibling of the same kind, a
different party or role, a different action on the same object, a different part or place said as a phrase,
and the guard's own number, negation, named entity and reversal (pairs.jsonl adds "topic": the same subject, a
different question). Each false-hit rate comes with its one-sided 95 % Clopper-Pearson upper bound.

Run: `python -m bench.cache_eval.verification` (development and burned parts, and CPU time per check), with
`--held-out` for held-out 3 too; `python -m bench.cache_eval.evaluate` rewrites curve.md with this report, all parts.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.cache_eval import evaluate
from shared.cache import guard as cacheguard
from shared.cache import verify as cacheverify
from shared.cache import verify_text

if TYPE_CHECKING:
    from collections.abc import Sequence

DEV = evaluate.HERE / "verify_dev.jsonl"
# The first held-out part: evaluated once (first round), so burned: development data since.
HELD_OUT = evaluate.HERE / "verify_holdout.jsonl"
# The second held-out part: written and committed alone once the first was seen (which made it development data).
HELD_OUT2 = evaluate.HERE / "verify_holdout2.jsonl"
# The second held-out part, burned too (the third round of rules and the threshold were chosen looking at it).
# The third held-out part: written and committed alone once the second was burned, before the third round of changes.
HELD_OUT3 = evaluate.HERE / "verify_holdout3.jsonl"
# The fourth held-out part: written and committed alone (commit f626c38) once held-out 3 was burned, before the fourth
# round (the proof, shared.cache.proof) was written, and evaluated once with it frozen (commit 6078051).
HELD_OUT4 = evaluate.HERE / "verify_holdout4.jsonl"
CLASSES = (
    "opposite",
    "sibling",
    "role",
    "action",
    "place",
    "number",
    "negation",
    "entity",
    "reversal",
    "topic",
)
THRESHOLDS = tuple(round(0.60 + 0.01 * i, 2) for i in range(31))  # 0.60 .. 0.90
# The rule that picked cacheverify.DEFAULT_SIMILARITY_THRESHOLD: the lowest threshold with no false hit at all on
# every burned set (the development part, pairs.jsonl, held-out 1 and 2), plus MARGIN. Safety first: a missed
# paraphrase costs one backend call, and both earlier held-out rounds leaked just above the zero-false-hit point
# of their development data (0.771, 0.787), so the margin buys room for questions nobody wrote down yet.
MAX_DEV_FALSE_HIT_RATE = 0.0
MARGIN = 0.02
CONFIDENCE = 0.95
# The one evaluation of held-out 2, with the second verifier frozen (commit 745fc53). The verifier was changed once
# after it (quantity words are content: the worst leak), so held-out 2 is burned too and the figures the report
# computes for it from then on are not a held-out measurement.
HELD_OUT2_MEASURED_ONCE = (
    "**Measured once** with the second verifier frozen (commit 745fc53), at 0.77: false hits 3 of 279 (1.1 %, "
    "upper bound 2.8 %), paraphrase hits 57 of 107 (53.3 %); at zero false hits (0.98) no paraphrase hits. "
    'After that evaluation one fix was made looking at it (quantity words such as "a lot" / "very little" are '
    "content, no longer filler), and the third round's contrast rule and threshold were chosen looking at it "
    "too, so the figures below are of a verifier tuned on held-out 2: burned, not evidence of generalisation."
)
# Targets on the held-out part (issue 12).
TARGET_UPPER_BOUND = 0.015
TARGET_PARAPHRASE_HIT_RATE = 0.70


@dataclass(frozen=True, slots=True)
class Judged:
    pair: evaluate.Pair
    similarity: float
    guard: bool  # shared.cacheguard passes it
    verdict: cacheverify.Verdict  # shared.cache.verify

    def hits(self, threshold: float, check: str = "verify") -> bool:
        passes = {"none": True, "guard": self.guard, "verify": self.verdict.ok}[check]
        return self.similarity >= threshold and passes


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    n: int
    hits: int
    upper: float  # one-sided 95 % Clopper-Pearson upper bound of the hit rate (the false-hit rate for negatives)


def upper_bound(hits: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The one-sided Clopper-Pearson upper bound p: P(X <= hits | n, p) = 1 - confidence, by bisection."""
    if n == 0 or hits >= n:
        return 1.0
    alpha = 1 - confidence
    lo, hi = hits / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _binomial_cdf(hits, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def _binomial_cdf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0 if k < n else 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        log_term = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        total += math.exp(log_term)
    return min(total, 1.0)


def judge(pairs: Sequence[evaluate.Pair]) -> list[Judged]:
    sims = evaluate.similarities(pairs)
    return [
        Judged(p, float(s), cacheguard.check(p.a, p.b).ok, cacheverify.verify(p.a, p.b))
        for p, s in zip(pairs, sims, strict=True)
    ]


def development() -> list[Judged]:
    return judge([*evaluate.load_pairs(DEV), *evaluate.load_pairs(evaluate.PAIRS)])


def held_out() -> list[Judged]:
    """The first held-out part, burned (development data since its one evaluation)."""
    return judge(evaluate.load_pairs(HELD_OUT))


def held_out2() -> list[Judged]:
    """The second held-out part, burned (development data since its one evaluation)."""
    return judge(evaluate.load_pairs(HELD_OUT2))


def held_out3() -> list[Judged]:
    return judge(evaluate.load_pairs(HELD_OUT3))


def held_out4() -> list[Judged]:
    return judge(evaluate.load_pairs(HELD_OUT4))


def burned_sets() -> dict[str, list[Judged]]:
    """Every part the third round of rules and the threshold were chosen on, by name."""
    return {
        "verify_dev.jsonl": judge(evaluate.load_pairs(DEV)),
        "pairs.jsonl": judge(evaluate.load_pairs(evaluate.PAIRS)),
        "held-out 1": held_out(),
        "held-out 2": held_out2(),
    }


def tuning() -> list[Judged]:
    """Everything the third round of rules and the threshold were chosen on: development, burned held-out 1 and 2."""
    return [j for part in burned_sets().values() for j in part]


def rows(judged: Sequence[Judged], threshold: float, check: str = "verify") -> list[Row]:
    """Per kind (paraphrase first, then each negative class present), then all negatives together."""
    out = []
    negatives = [j for j in judged if j.pair.label == "miss"]
    for kind in ("paraphrase", *CLASSES):
        of_kind = [j for j in judged if j.pair.kind == kind]
        if of_kind:
            hits = sum(j.hits(threshold, check) for j in of_kind)
            out.append(Row(kind, len(of_kind), hits, upper_bound(hits, len(of_kind))))
    false_hits = sum(j.hits(threshold, check) for j in negatives)
    out.append(Row("all negatives", len(negatives), false_hits, upper_bound(false_hits, len(negatives))))
    return out


def rates(judged: Sequence[Judged], threshold: float, check: str = "verify") -> tuple[float, float, int]:
    """(paraphrase hit rate, false-hit rate, false hits)."""
    paraphrases = [j for j in judged if j.pair.kind == "paraphrase"]
    negatives = [j for j in judged if j.pair.label == "miss"]
    hits = sum(j.hits(threshold, check) for j in paraphrases) / max(len(paraphrases), 1)
    false_hits = sum(j.hits(threshold, check) for j in negatives)
    return hits, false_hits / max(len(negatives), 1), false_hits


def zero_point(dev: Sequence[Judged]) -> float | None:
    """The lowest threshold whose false-hit rate with verification, on the development data, is at most
    MAX_DEV_FALSE_HIT_RATE (zero)."""
    for t in THRESHOLDS:
        if rates(dev, t)[1] <= MAX_DEV_FALSE_HIT_RATE:
            return t
    return None


def recommended_threshold(dev: Sequence[Judged]) -> float | None:
    """zero_point plus MARGIN: the default threshold with verification."""
    zero = zero_point(dev)
    return None if zero is None else round(zero + MARGIN, 2)


def timing(pairs: Sequence[evaluate.Pair], rounds: int = 5) -> tuple[float, float]:
    """CPU microseconds per verification: p50 of first sight (memos cleared), p50 once both texts are memoised."""
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(rounds):
        cacheguard._analyse.cache_clear()
        verify_text.tokens.cache_clear()
        for p in pairs:
            start = time.process_time_ns()
            cacheverify.verify(p.a, p.b)
            cold.append((time.process_time_ns() - start) / 1e3)
        for p in pairs:
            start = time.process_time_ns()
            cacheverify.verify(p.a, p.b)
            warm.append((time.process_time_ns() - start) / 1e3)
    return sorted(cold)[len(cold) // 2], sorted(warm)[len(warm) // 2]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def class_table(judged: Sequence[Judged], threshold: float) -> list[str]:
    lines = [
        "| kind | pairs | hits, threshold only | hits, guard | hits, verification | rate | 95 % upper bound |",
        "|---|---|---|---|---|---|---|",
    ]
    alone = {r.kind: r for r in rows(judged, threshold, "none")}
    guard = {r.kind: r for r in rows(judged, threshold, "guard")}
    for r in rows(judged, threshold):
        bound = "-" if r.kind == "paraphrase" else f"{_pct(r.upper)} %"
        lines.append(
            f"| {r.kind} | {r.n} | {alone[r.kind].hits} | {guard[r.kind].hits} | {r.hits} | "
            f"{_pct(r.hits / max(r.n, 1))} % | {bound} |"
        )
    return lines


def curve_table(judged: Sequence[Judged]) -> list[str]:
    lines = [
        "| threshold | paraphrase hits, guard | false hits, guard | paraphrase hits, verification "
        "| false hits, verification | 95 % upper bound |",
        "|---|---|---|---|---|---|",
    ]
    for t in THRESHOLDS:
        gp, gf, gn = rates(judged, t, "guard")
        vp, vf, vn = rates(judged, t)
        n = sum(j.pair.label == "miss" for j in judged)
        lines.append(
            f"| {t:.2f} | {_pct(gp)} % | {_pct(gf)} % ({gn}) | {_pct(vp)} % | {_pct(vf)} % ({vn}) | "
            f"{_pct(upper_bound(vn, n))} % |"
        )
    return lines


def reasons(judged: Sequence[Judged]) -> list[str]:
    names = [*cacheverify.REASONS, "pass"]
    counts: dict[str, Counter[str]] = {}
    for j in judged:
        counts.setdefault(j.pair.kind, Counter())[j.verdict.reason or "pass"] += 1
    lines = ["| kind | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for kind in ("paraphrase", *CLASSES):
        if kind in counts:
            lines.append(f"| {kind} | " + " | ".join(str(counts[kind][n]) for n in names) + " |")
    return lines


def report(
    dev: Sequence[Judged], burned1: Sequence[Judged], burned2: Sequence[Judged], held: Sequence[Judged] | None = None
) -> str:
    tuned = [*dev, *burned1, *burned2]
    zero, chosen = zero_point(tuned), recommended_threshold(tuned)
    at = chosen if chosen is not None else cacheverify.DEFAULT_SIMILARITY_THRESHOLD
    counts = Counter(j.pair.kind for j in dev)
    lines = [
        "# Verification of semantic candidates (shared.cache.verify)",
        "",
        "The order of events: the development part was looked at freely; held-out 1 (verify_holdout.jsonl) was "
        "evaluated once with the first verifier (2 false hits of 252) and burned; held-out 2 (verify_holdout2.jsonl) "
        "was evaluated once with the second verifier (3 false hits of 279) and burned; held-out 3 "
        "(verify_holdout3.jsonl) was written and committed alone before the third round, which was tuned on the "
        "development part and the burned held-out 1 and 2 only, then frozen, and held-out 3 evaluated once.",
        "",
        f"Development part: {len(dev)} pairs (bench/cache_eval/verify_dev.jsonl and pairs.jsonl: "
        + ", ".join(f"{k} {counts[k]}" for k in ("paraphrase", *CLASSES) if counts[k])
        + f"); burned held-out 1: {len(burned1)} pairs; burned held-out 2: {len(burned2)} pairs. A pair hits when "
        "its cosine is at or above the threshold and the check passes it. Upper bounds are one-sided 95 % "
        "Clopper-Pearson bounds on the false-hit rate.",
        "",
        f"**Threshold with verification: {at:.2f}**: the lowest threshold with no false hit on the development part "
        f"and the burned held-out 1 and 2 ({zero if zero is None else f'{zero:.2f}'}), plus a margin of "
        f"{MARGIN:.2f} (shared.cache.config.VERIFIED_SIMILARITY_THRESHOLD).",
        "",
        f"## Development part at {at:.2f}",
        "",
        *class_table(dev, at),
        "",
        f"## Burned held-out 1 at {at:.2f} (tuned on in the second and third rounds: not evidence of generalisation)",
        "",
        *class_table(burned1, at),
        "",
        f"## Burned held-out 2 at {at:.2f} (tuned on in the third round: not evidence of generalisation)",
        "",
        HELD_OUT2_MEASURED_ONCE,
        "",
        *class_table(burned2, at),
        "",
        "## The curve (development part and burned held-out 1 and 2)",
        "",
        *curve_table(tuned),
        "",
        "## Which check refuses what (development part and burned held-out 1 and 2, any similarity)",
        "",
        *reasons(tuned),
        "",
        f"Development negatives that still hit at {at:.2f}:",
        "",
    ]
    still = [j for j in tuned if j.pair.label == "miss" and j.hits(at)]
    lines += [f"- {j.pair.kind} ({j.similarity:.3f}): {j.pair.a} / {j.pair.b}" for j in still] or ["- none"]
    if held is not None:
        para, fhr, fh = rates(held, at)
        n = sum(j.pair.label == "miss" for j in held)
        paraphrases = sum(j.pair.kind == "paraphrase" for j in held)
        lines += [
            "",
            f"## Held-out 3 at {at:.2f}, measured once",
            "",
            f"bench/cache_eval/verify_holdout3.jsonl, {len(held)} pairs, evaluated once with the verifier and "
            'threshold frozen (the commit "frozen before held-out 3"): paraphrase hits '
            f"{round(para * paraphrases)} of {paraphrases} ({_pct(para)} %), false hits {fh} of {n} ({_pct(fhr)} %, "
            f"upper bound {_pct(upper_bound(fh, n))} %). Targets: false hits 0 with the upper bound under "
            f"{100 * TARGET_UPPER_BOUND:.1f} %, paraphrase hits at least {100 * TARGET_PARAPHRASE_HIT_RATE:.0f} %. "
            + _safe_point(held),
            "",
            *class_table(held, at),
            "",
            "### The curve on held-out 3",
            "",
            *curve_table(held),
            "",
            *reasons(held),
            "",
        ]
        lines += [
            f"- still hits: {j.pair.kind} ({j.similarity:.3f}): {j.pair.a} / {j.pair.b}"
            for j in held
            if j.pair.label == "miss" and j.hits(at)
        ]
        lines += [
            f"- refused paraphrase: {j.verdict.reason} ({j.similarity:.3f}): {j.pair.a} / {j.pair.b}"
            for j in held
            if j.pair.kind == "paraphrase" and j.similarity >= at and not j.verdict.ok
        ]
    return "\n".join(lines) + "\n"


def safe_threshold(judged: Sequence[Judged]) -> float | None:
    """The lowest threshold, in steps of 0.01 up to 1, at which no negative hits."""
    for step in range(50, 101):
        if rates(judged, step / 100)[2] == 0:
            return step / 100
    return None


def _safe_point(judged: Sequence[Judged]) -> str:
    safe = safe_threshold(judged)
    if safe is None:
        return "No threshold gives zero false hits."
    return (
        f"Safety first: the best paraphrase hit rate at zero false hits is {_pct(rates(judged, safe)[0])} % "
        f"(threshold {safe:.2f})."
    )


def main(argv: Sequence[str] = ()) -> None:
    dev = development()
    held = held_out3() if "--held-out" in argv else None
    print(report(dev, held_out(), held_out2(), held))
    cold, warm = timing([j.pair for j in dev])
    print(f"verification CPU time per lookup: p50 {cold:.0f} µs first sight, p50 {warm:.0f} µs memoised")


if __name__ == "__main__":
    main(sys.argv[1:])
