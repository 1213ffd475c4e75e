from __future__ import annotations

import hashlib
import json
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


def test_the_proof_lets_no_negative_through_on_any_burned_part_at_any_threshold(
    held_out: list[verification.Judged],
    held_out2: list[verification.Judged],
    held_out3: list[verification.Judged],
    held_out4: list[verification.Judged],
) -> None:
    # The fourth round's gate (shared.cache.proof): a candidate is served only when every term is matched. On every
    # part tuned on (development, the burned held-out 1 to 4) no negative hits even at the lowest threshold of the
    # curve, so the threshold no longer decides safety: it stays at the third round's 0.79, which bounds how many
    # candidates reach the checks and, when one is configured, the judge deployment (each judge call is a backend call).
    tuned = {
        "verify_dev.jsonl": verification.judge(evaluate.load_pairs(verification.DEV)),
        "pairs.jsonl": verification.judge(evaluate.load_pairs(evaluate.PAIRS)),
        "held-out 1": held_out,
        "held-out 2": held_out2,
        "held-out 3": held_out3,
        "held-out 4": held_out4,
    }
    for name, part in tuned.items():
        assert verification.rates(part, verification.THRESHOLDS[0])[2] == 0, name
    everything = [j for part in tuned.values() for j in part]
    assert verification.zero_point(everything) == verification.THRESHOLDS[0]
    assert VERIFIED_SIMILARITY_THRESHOLD == 0.79


def test_clopper_pearson_upper_bounds() -> None:
    assert verification.upper_bound(0, 252) == pytest.approx(1 - 0.05 ** (1 / 252), abs=1e-9)
    assert verification.upper_bound(2, 252) == pytest.approx(0.0247, abs=5e-4)  # beta.ppf(0.95, 3, 250)
    assert verification.upper_bound(5, 5) == 1.0


# The first round's threshold, at which held-out 1 was measured once (2 false hits, 43.6 % paraphrase hits).
FIRST_ROUND_THRESHOLD = 0.74


def test_the_held_out_part_has_no_false_hit_where_it_was_measured_once(held_out: list[verification.Judged]) -> None:
    # Measured once with the first verifier frozen, at 0.74: 2 false hits, 43.6 % paraphrase hits (curve.md keeps the
    # figures). Burned since. The proof now lets none of its negatives through, and none of its 94 rewording
    # paraphrases either: a rewording is unproven, a miss unless a judge deployment says "same".
    _, _, false_hits = verification.rates(held_out, FIRST_ROUND_THRESHOLD)
    assert false_hits == 0


def test_the_burned_held_out_part_has_no_false_hit_at_the_default_threshold(
    held_out: list[verification.Judged],
) -> None:
    # Development data since the first round: the two leaks found there (a "non-compete" on both sides, a reworded
    # place phrase) are fixed by the second round's rules, which were tuned looking at it.
    _, _, false_hits = verification.rates(held_out, VERIFIED_SIMILARITY_THRESHOLD)
    assert false_hits == 0


@pytest.mark.xfail(strict=True, reason="held-out 1 (burned): no paraphrase is proven at 0.79 (all reword), target 70 %")
def test_the_held_out_targets(held_out: list[verification.Judged]) -> None:
    paraphrase_hits, _, false_hits = verification.rates(held_out, VERIFIED_SIMILARITY_THRESHOLD)
    negatives = sum(j.pair.label == "miss" for j in held_out)
    assert false_hits == 0
    assert verification.upper_bound(false_hits, negatives) < verification.TARGET_UPPER_BOUND
    assert paraphrase_hits >= verification.TARGET_PARAPHRASE_HIT_RATE


# ---- the second held-out part: the first was evaluated once and so became development data

HELD_OUT2_SHA256 = "dc5af96f27b4583f1a83649749c09975bb1c3f18d1b8fa4c4f9943a7438b74b6"


def test_the_second_held_out_part_is_the_one_committed_before_the_verifier_changed() -> None:
    # Committed alone (its own commit), before the verifier and guard were changed; editing it burns it.
    assert hashlib.sha256(verification.HELD_OUT2.read_bytes()).hexdigest() == HELD_OUT2_SHA256


def test_the_second_held_out_part_is_large_enough_and_shares_no_prompt() -> None:
    held = evaluate.load_pairs(verification.HELD_OUT2)
    counts = Counter(p.kind for p in held)
    assert counts["paraphrase"] >= 100
    assert sum(counts[k] for k in NEW_CLASSES) >= 260
    for kind in NEW_CLASSES:
        assert counts[kind] >= 29, kind
    assert set(counts) == {"paraphrase", *NEW_CLASSES}
    assert all((p.label == "hit") == (p.kind == "paraphrase") for p in held)
    assert len({(p.a, p.b) for p in held}) == len(held)
    texts = {t for p in held for t in (p.a, p.b)}
    others = sorted(f for f in evaluate.HERE.glob("*.jsonl") if f != verification.HELD_OUT2)
    assert len(others) >= 4
    earlier = {t for f in others for t in evaluate.prompt_texts(f)}
    assert not texts & earlier


@pytest.fixture(scope="module")
def held_out2() -> list[verification.Judged]:
    return verification.held_out2()


# The second round's threshold, at which held-out 2 was measured once.
SECOND_ROUND_THRESHOLD = 0.77


def test_held_out_2_has_no_false_hit_where_it_was_measured_once(held_out2: list[verification.Judged]) -> None:
    # Measured once with the second verifier frozen (commit 745fc53) at 0.77: 3 false hits of 279 (1.1 %, upper bound
    # 2.8 %) and 57 of 107 paraphrases (53.3 %). Burned since; with the proof, no false hit and no paraphrase (all
    # reword) at that threshold.
    _, _, false_hits = verification.rates(held_out2, SECOND_ROUND_THRESHOLD)
    assert false_hits == 0


@pytest.mark.xfail(
    strict=True,
    reason="held-out 2, measured once: 3 false hits of 279 (upper bound 2.8 %) and 53.3 % paraphrase hits at 0.77; "
    "at zero false hits (threshold 0.98) no paraphrase hits. Burned since; with the proof 0 false hits and no "
    "paraphrase proven (all reword). Targets: 0 false hits, bound < 1.5 %, >= 70 %",
)
def test_the_held_out_2_targets(held_out2: list[verification.Judged]) -> None:
    paraphrase_hits, _, false_hits = verification.rates(held_out2, VERIFIED_SIMILARITY_THRESHOLD)
    negatives = sum(j.pair.label == "miss" for j in held_out2)
    assert false_hits == 0
    assert verification.upper_bound(false_hits, negatives) < verification.TARGET_UPPER_BOUND
    assert paraphrase_hits >= verification.TARGET_PARAPHRASE_HIT_RATE


# ---- the third held-out part: held-out 1 and 2 were each evaluated once and so became development data

HELD_OUT3_SHA256 = "a794eaf4e270bc12bf74ea21d295145959f981a158f513fa7643dbcbd2f493b1"


def test_the_third_held_out_part_is_the_one_committed_before_the_third_round() -> None:
    # Committed alone (commit 9d87756), written without opening the verifier's or the guard's rules, before the
    # threshold and rules of the third round were chosen; editing it burns it.
    assert hashlib.sha256(verification.HELD_OUT3.read_bytes()).hexdigest() == HELD_OUT3_SHA256


def test_the_third_held_out_part_is_large_enough_and_shares_no_prompt() -> None:
    held = evaluate.load_pairs(verification.HELD_OUT3)
    counts = Counter(p.kind for p in held)
    assert counts["paraphrase"] >= 110
    assert sum(counts[k] for k in NEW_CLASSES) >= 300
    for kind in NEW_CLASSES:
        assert counts[kind] >= 33, kind
    assert set(counts) == {"paraphrase", *NEW_CLASSES}
    assert all((p.label == "hit") == (p.kind == "paraphrase") for p in held)
    assert len({(p.a, p.b) for p in held}) == len(held)
    texts = {t for p in held for t in (p.a, p.b)}
    others = sorted(f for f in evaluate.HERE.glob("*.jsonl") if f != verification.HELD_OUT3)
    assert len(others) >= 5
    earlier = {t for f in others for t in evaluate.prompt_texts(f)}
    assert not texts & earlier


@pytest.fixture(scope="module")
def held_out3() -> list[verification.Judged]:
    return verification.held_out3()


# Held-out 3, evaluated once with the third verifier frozen (commit 98907de, "frozen before held-out 3") at its
# default threshold 0.79: 18 false hits of 307 (5.9 %, upper bound 8.6 %) and 57 of 115 paraphrases (49.6 %); at
# zero false hits (threshold 0.92) 6.1 % of paraphrases hit. By class (false hits of 34, 35 for opposites):
# opposite 2, sibling 4, role 4, action 1, place 2, number 0, negation 1, entity 0, reversal 4.
HELD_OUT3_FALSE_HITS = {
    "opposite": 2,
    "sibling": 4,
    "role": 4,
    "action": 1,
    "place": 2,
    "number": 0,
    "negation": 1,
    "entity": 0,
    "reversal": 4,
}


def test_held_out_3_stays_where_it_was_measured_once(held_out3: list[verification.Judged]) -> None:
    # Burned since its one evaluation (the figures above, in curve.md). With the fourth round's proof: no false hit
    # at any threshold, and 1 of its 115 paraphrases (written to reword) proven.
    paraphrase_hits, _, false_hits = verification.rates(held_out3, VERIFIED_SIMILARITY_THRESHOLD)
    assert false_hits == 0
    assert paraphrase_hits >= 1 / 115 - 1e-9
    for row in verification.rows(held_out3, VERIFIED_SIMILARITY_THRESHOLD):
        if row.kind in HELD_OUT3_FALSE_HITS:
            assert row.hits == 0, row.kind
    assert verification.safe_threshold(held_out3) == 0.5


@pytest.mark.xfail(
    strict=True,
    reason="held-out 3, measured once: 18 false hits of 307 (upper bound 8.6 %) and 49.6 % paraphrase hits at 0.79; "
    "at zero false hits (threshold 0.92) 6.1 %. Targets: 0 false hits, bound < 1.5 %, >= 70 %",
)
def test_the_held_out_3_targets(held_out3: list[verification.Judged]) -> None:
    paraphrase_hits, _, false_hits = verification.rates(held_out3, VERIFIED_SIMILARITY_THRESHOLD)
    negatives = sum(j.pair.label == "miss" for j in held_out3)
    assert false_hits == 0
    assert verification.upper_bound(false_hits, negatives) < verification.TARGET_UPPER_BOUND
    assert paraphrase_hits >= verification.TARGET_PARAPHRASE_HIT_RATE


@pytest.mark.xfail(
    strict=True,
    reason="held-out 3, measured once: the best paraphrase hit rate at zero false hits is 6.1 % (threshold 0.92), "
    "the fallback target of issue 12 being 70 %",
)
def test_the_held_out_3_paraphrase_target_at_zero_false_hits(held_out3: list[verification.Judged]) -> None:
    safe = verification.safe_threshold(held_out3)
    assert safe is not None
    assert verification.rates(held_out3, safe)[0] >= verification.TARGET_PARAPHRASE_HIT_RATE


# ---- the fourth held-out part: held-out 3 was evaluated once and so became development data

HELD_OUT4_SHA256 = "459208387323c8d5782bcdee2d6086e1836139e46359bcf18e2def2e9739ff89"


def test_the_fourth_held_out_part_is_the_one_committed_before_the_fourth_round() -> None:
    # Committed alone (commit f626c38), written without opening the verifier's or the guard's rules, before the proof
    # (the fourth round) was written; evaluated once with it frozen (commit 6078051). Burned since.
    assert hashlib.sha256(verification.HELD_OUT4.read_bytes()).hexdigest() == HELD_OUT4_SHA256


def test_the_fourth_held_out_part_is_large_enough_and_shares_no_prompt() -> None:
    held = evaluate.load_pairs(verification.HELD_OUT4)
    counts = Counter(p.kind for p in held)
    assert counts["paraphrase"] >= 160
    assert sum(counts[k] for k in NEW_CLASSES) >= 360
    for kind in NEW_CLASSES:
        assert counts[kind] >= 40, kind
    assert set(counts) == {"paraphrase", *NEW_CLASSES}
    assert all((p.label == "hit") == (p.kind == "paraphrase") for p in held)
    assert len({(p.a, p.b) for p in held}) == len(held)
    texts = {t.strip().lower() for p in held for t in (p.a, p.b)}
    others = sorted(f for f in evaluate.HERE.glob("*.jsonl") if f != verification.HELD_OUT4)
    earlier = {t.strip().lower() for f in others for t in evaluate.prompt_texts(f)}
    assert not texts & earlier


@pytest.fixture(scope="module")
def held_out4() -> list[verification.Judged]:
    return verification.held_out4()


def test_held_out_4_stays_where_it_was_measured_once(held_out4: list[verification.Judged]) -> None:
    # Measured once with the proof frozen (commit 6078051) at 0.79: 1 false hit of 377 (0.27 %, upper bound 1.25 %: a
    # crossed comparative, "make a small room look bigger" / "make a big room look smaller", whose words the proof
    # matched by lemma) and 31 of 167 paraphrases (18.6 %; none of the 125 rewordings). The fix made after looking
    # at it (a comparative or superlative only matches its own degree) is why held-out 4 is development data now.
    paraphrase_hits, _, false_hits = verification.rates(held_out4, VERIFIED_SIMILARITY_THRESHOLD)
    assert false_hits == 0
    assert paraphrase_hits >= 31 / 167 - 1e-9


@pytest.mark.xfail(
    strict=True,
    reason="held-out 4, measured once: 1 false hit of 377 (upper bound 1.25 %) and 18.6 % paraphrase hits at 0.79. "
    "Targets: 0 false hits, bound < 1.5 %, >= 70 %",
)
def test_the_held_out_4_targets(held_out4: list[verification.Judged]) -> None:
    paraphrase_hits, _, false_hits = verification.rates(held_out4, VERIFIED_SIMILARITY_THRESHOLD)
    negatives = sum(j.pair.label == "miss" for j in held_out4)
    assert false_hits == 0
    assert verification.upper_bound(false_hits, negatives) < verification.TARGET_UPPER_BOUND
    assert paraphrase_hits >= verification.TARGET_PARAPHRASE_HIT_RATE


# ---- the fifth held-out part: held-out 4 was evaluated once and so became development data

HELD_OUT5_SHA256 = "ae144563f1349d7a6600e49927ab493ec97dfbeac03ec6fb9927bb5b327aecb1"


def test_the_fifth_held_out_part_is_the_one_committed_before_the_fifth_round_was_frozen() -> None:
    # Committed alone (commit a732930), written without opening the verifier's, the proof's or the guard's rules.
    assert hashlib.sha256(verification.HELD_OUT5.read_bytes()).hexdigest() == HELD_OUT5_SHA256


def test_the_fifth_held_out_part_is_large_enough_and_shares_no_prompt() -> None:
    held = evaluate.load_pairs(verification.HELD_OUT5)
    counts = Counter(p.kind for p in held)
    assert counts["paraphrase"] >= 160
    assert sum(counts[k] for k in NEW_CLASSES) >= 378
    for kind in NEW_CLASSES:
        assert counts[kind] >= 42, kind
    assert set(counts) == {"paraphrase", *NEW_CLASSES}
    assert all((p.label == "hit") == (p.kind == "paraphrase") for p in held)
    assert len({(p.a, p.b) for p in held}) == len(held)
    texts = {t.strip().lower() for p in held for t in (p.a, p.b)}
    others = sorted(f for f in evaluate.HERE.glob("*.jsonl") if f != verification.HELD_OUT5)
    assert len(others) >= 7
    earlier = {t.strip().lower() for f in others for t in evaluate.prompt_texts(f)}
    assert not texts & earlier


@pytest.fixture(scope="module")
def held_out5() -> list[verification.Judged]:
    return verification.held_out5()


# Held-out 5, evaluated once with the fifth round frozen (commit 0525247) at 0.79: 0 false hits of 396 (upper bound
# 0.75 %), 23 of 163 paraphrases (14.1 %); the same at every threshold from 0.60 to 0.85. By class, none of 44 in
# each of the nine.


def test_the_held_out_5_safety_targets(held_out5: list[verification.Judged]) -> None:
    # Issue 12: false hits 0 with the 95 % upper bound under 1.5 %, on pairs written before the round was frozen.
    _, _, false_hits = verification.rates(held_out5, VERIFIED_SIMILARITY_THRESHOLD)
    negatives = sum(j.pair.label == "miss" for j in held_out5)
    assert false_hits == 0
    assert verification.upper_bound(false_hits, negatives) < verification.TARGET_UPPER_BOUND
    for row in verification.rows(held_out5, VERIFIED_SIMILARITY_THRESHOLD):
        if row.kind in NEW_CLASSES:
            assert row.hits == 0, row.kind
    # Safety first: the best paraphrase hit rate at zero false hits, measured once (the fallback the issue names).
    assert verification.safe_threshold(held_out5) == 0.5
    assert verification.rates(held_out5, VERIFIED_SIMILARITY_THRESHOLD)[0] >= 23 / 163 - 1e-9


@pytest.mark.xfail(
    strict=True,
    reason="held-out 5, measured once: 14.1 % paraphrase hits at zero false hits (target 70 %): a rewording is "
    "unproven, a miss unless a judge deployment says the two are the same",
)
def test_the_held_out_5_paraphrase_target(held_out5: list[verification.Judged]) -> None:
    assert verification.rates(held_out5, VERIFIED_SIMILARITY_THRESHOLD)[0] >= verification.TARGET_PARAPHRASE_HIT_RATE


# ---- held-out triples 6: the cache tried end to end as a new user would (bench.cache_triples), run once

TRIPLES6_SHA256 = "431419130675f6dfe13e4b9c2cf27b0342946be469e9a49df7dcc755ba0c643d"


def test_the_triples_are_the_ones_committed_before_the_end_to_end_run() -> None:
    # Committed alone (commit 048a372) by someone who had not opened the checks, once the fifth round was measured;
    # run once with `python -m bench.cache_triples` (a gateway process, the openai SDK): 0 of 80 minimal pairs served
    # (upper bound 3.7 %), 33 of 80 paraphrases (41.2 %).
    path = evaluate.HERE / "triples_holdout6.jsonl"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == TRIPLES6_SHA256
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert Counter(r["kind"] for r in rows) == dict.fromkeys(("opposite", "sibling", "role", "action", "place"), 16)
    others = sorted(f for f in evaluate.HERE.glob("*.jsonl") if f != path)
    earlier = {t.strip().lower() for f in others for t in evaluate.prompt_texts(f)}
    assert not {t.strip().lower() for t in evaluate.prompt_texts(path)} & earlier
