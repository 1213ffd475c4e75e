from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from bench.cache_eval import evaluate, verification
from shared.cache import guard as cacheguard
from shared.cache.config import VERIFIED_SIMILARITY_THRESHOLD


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


# ---- the verification's evaluation (issue 12): a development part, and a held-out part frozen by its hash

HELD_OUT_SHA256 = "e9ffec56326153730782c1d454c309947ada60ddba959f1d5fa8124634b9c043"
NEW_CLASSES = ("opposite", "sibling", "role", "action", "place", "number", "negation", "entity", "reversal")


@pytest.fixture(scope="module")
def held_out() -> list[verification.Judged]:
    return verification.held_out()


def test_the_held_out_part_is_the_one_written_before_the_verifier() -> None:
    # Committed alone, before any verifier existed; editing it would turn it into development data.
    assert hashlib.sha256(verification.HELD_OUT.read_bytes()).hexdigest() == HELD_OUT_SHA256


def test_the_verification_sets_are_large_enough_and_split_before_tuning() -> None:
    dev, held = evaluate.load_pairs(verification.DEV), evaluate.load_pairs(verification.HELD_OUT)
    both = [*dev, *held]
    counts, held_counts = Counter(p.kind for p in both), Counter(p.kind for p in held)
    assert len(both) >= 900
    assert len(held) >= len(both) / 3
    assert counts["paraphrase"] >= 200
    assert held_counts["paraphrase"] >= 90
    assert sum(held_counts[k] for k in NEW_CLASSES) >= 250
    for kind in NEW_CLASSES:
        assert counts[kind] >= 50, kind
    assert set(counts) == {"paraphrase", *NEW_CLASSES}
    assert all((p.label == "hit") == (p.kind == "paraphrase") for p in both)
    texts = {t for p in held for t in (p.a, p.b)}
    earlier = [*evaluate.load_pairs(), *evaluate.load_pairs(evaluate.HOLDOUT), *dev]
    assert not texts & {t for p in earlier for t in (p.a, p.b)}


def test_the_verified_threshold_is_the_one_the_development_part_recommends() -> None:
    # Edit the development pairs or the verifier, and this says to rerun `python -m bench.cache_eval.evaluate`.
    assert verification.recommended_threshold(verification.development()) == VERIFIED_SIMILARITY_THRESHOLD


def test_clopper_pearson_upper_bounds() -> None:
    assert verification.upper_bound(0, 252) == pytest.approx(1 - 0.05 ** (1 / 252), abs=1e-9)
    assert verification.upper_bound(2, 252) == pytest.approx(0.0247, abs=5e-4)  # beta.ppf(0.95, 3, 250)
    assert verification.upper_bound(5, 5) == 1.0


def test_the_held_out_part_stays_where_it_was_measured_once(held_out: list[verification.Judged]) -> None:
    # A regression check at the figures measured once with the verifier frozen, not a target reached.
    paraphrase_hits, _, false_hits = verification.rates(held_out, VERIFIED_SIMILARITY_THRESHOLD)
    assert false_hits <= 2
    assert paraphrase_hits >= 0.43
    for row in verification.rows(held_out, VERIFIED_SIMILARITY_THRESHOLD):
        if row.kind in ("opposite", "sibling", "role", "action", "number", "reversal", "entity"):
            assert row.hits == 0, row.kind


@pytest.mark.xfail(strict=True, reason="issue 12's held-out targets are not reached; see curve.md")
def test_the_held_out_targets(held_out: list[verification.Judged]) -> None:
    paraphrase_hits, _, false_hits = verification.rates(held_out, VERIFIED_SIMILARITY_THRESHOLD)
    negatives = sum(j.pair.label == "miss" for j in held_out)
    assert false_hits == 0
    assert verification.upper_bound(false_hits, negatives) < verification.TARGET_UPPER_BOUND
    assert paraphrase_hits >= verification.TARGET_PARAPHRASE_HIT_RATE
