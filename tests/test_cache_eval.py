from __future__ import annotations

from collections import Counter

import pytest

from bench.cache_eval import evaluate
from shared.cache import guard as cacheguard


@pytest.fixture(scope="module")
def scored() -> list[evaluate.Scored]:
    return evaluate.score(evaluate.load_pairs())


def test_the_set_has_enough_pairs_of_every_kind() -> None:
    pairs = evaluate.load_pairs()
    counts = Counter(p.kind for p in pairs)
    assert len(pairs) >= 300
    assert counts["paraphrase"] >= 160
    for kind in evaluate.NEGATIVE_KINDS:
        assert counts[kind] >= 30, kind
    assert set(counts) == set(evaluate.KINDS)


def test_labels_match_kinds_and_no_pair_repeats() -> None:
    pairs = evaluate.load_pairs()
    assert all((p.label == "hit") == (p.kind == "paraphrase") for p in pairs)
    assert all(p.a != p.b for p in pairs)
    assert len({(p.a, p.b) for p in pairs}) == len(pairs)
    held_out = evaluate.load_pairs(evaluate.HOLDOUT)
    assert not {(p.a, p.b) for p in held_out} & {(p.a, p.b) for p in pairs}


def test_at_the_default_threshold_with_the_guard_false_hits_stay_under_one_percent(
    scored: list[evaluate.Scored],
) -> None:
    at_default = evaluate.point(scored, cacheguard.DEFAULT_SIMILARITY_THRESHOLD, guard=True)
    assert at_default.false_hit_rate <= evaluate.MAX_FALSE_HIT_RATE
    assert at_default.paraphrase_hit_rate >= evaluate.TARGET_PARAPHRASE_HIT_RATE


def test_the_default_threshold_is_the_one_the_curve_recommends(scored: list[evaluate.Scored]) -> None:
    # Edit pairs.jsonl or the guard, and this says to rerun `python -m bench.cache_eval.evaluate`.
    assert evaluate.recommended_threshold(evaluate.curve(scored)) == cacheguard.DEFAULT_SIMILARITY_THRESHOLD


def test_without_the_guard_no_threshold_is_safe(scored: list[evaluate.Scored]) -> None:
    # The reason the guard exists: reversals and negations score close to 1.
    unguarded = [evaluate.point(scored, t, guard=False) for t in evaluate.THRESHOLDS]
    assert all(p.false_hit_rate > evaluate.MAX_FALSE_HIT_RATE for p in unguarded)


def test_the_guard_catches_every_targeted_negative_kind(scored: list[evaluate.Scored]) -> None:
    reasons = evaluate.guard_reasons(scored)
    for kind in ("number", "negation", "entity", "reversal"):
        caught = sum(reasons[kind].values()) - reasons[kind]["pass"]
        assert caught / sum(reasons[kind].values()) >= 0.9, kind


def test_held_out_pairs_stay_safe_at_the_default_threshold() -> None:
    # A regression check on pairs written after the guard was frozen, never a target to tune against.
    at_default = evaluate.point(
        evaluate.score(evaluate.load_pairs(evaluate.HOLDOUT)), cacheguard.DEFAULT_SIMILARITY_THRESHOLD, guard=True
    )
    assert at_default.false_hits <= 1


def test_the_guard_gives_the_same_verdict_either_way_round() -> None:
    for p in evaluate.load_pairs():
        assert cacheguard.check(p.a, p.b) == cacheguard.check(p.b, p.a), (p.a, p.b)
