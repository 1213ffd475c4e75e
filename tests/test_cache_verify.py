"""The verification of semantic candidates: each rule on its own, the guard's rules through it, and its failure path."""

from __future__ import annotations

import pytest

from bench.cache_eval import evaluate, verification
from shared.cache import guard as cacheguard
from shared.cache import verify
from shared.cache.stage import BYPASS, HIT, MISS
from tests.test_cache import ALICE, answer, chat, make_cache, miss_then_store

# ---- the structural rule: a swapped or added content word in the same sentence


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # words on no list anywhere: the shape of the difference is what counts
        ("How do I keep my garage warm in winter?", "How do I keep my garage cool in winter?"),
        ("How often should I feed my parrot?", "How often should I feed my tortoise?"),
        ("What does the lessor have to repair?", "What does the lessee have to repair?"),
        ("How do I snooze a thread in Gmail?", "How do I star a thread in Gmail?"),
        ("I have a rash on my elbow, what is it?", "I have a rash behind my ear, what is it?"),
        ("What is the capital of Australia?", "What is the largest city in Australia?"),
    ],
)
def test_a_content_word_or_phrase_swapped_in_the_same_sentence_is_a_substitution(a: str, b: str) -> None:
    assert verify.structure(a, b) == verify.Verdict(False, verify.SUBSTITUTION)
    assert verify.verify(a, b).reason == verify.SUBSTITUTION


def test_a_quantity_is_content_not_filler() -> None:
    # Held-out 2's worst leak (0.973): "a lot" was folded away and "little" was a function word, so "sleep a lot" and
    # "sleep very little" had the same content words. Fixed after held-out 2 was evaluated (so it is burned too).
    a, b = (
        "Is it normal for my puppy to drink a lot at night?",
        "Is it normal for my puppy to drink very little at night?",
    )
    assert verify.verify(a, b) == verify.Verdict(False, verify.SUBSTITUTION)
    assert verify.verify("Why does my dog shed a lot?", "why does my dog shed so much").ok


def test_a_content_word_only_one_prompt_has_is_an_addition() -> None:
    assert verify.structure("How do I clean the oven?", "How do I clean the oven door?").reason == verify.ADDITION
    assert verify.structure("How long do I cook rice?", "How long do I cook wild rice?").reason == verify.ADDITION


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "how can i reset my password"),  # frame words
        ("Hi! How do I reset my password please?", "How do I reset my password?"),  # politeness
        ("How do I fix my laptop?", "How do I repair my laptop?"),  # a known synonym
        ("How do I get rid of ants?", "How do I remove ants?"),  # a known phrase
        ("How do I install the printers?", "How do I install the printer?"),  # inflection
        ("What colour is the sky?", "What color is the sky?"),  # spelling
        ("How do I set up the wifi?", "How do I set up the wi-fi?"),  # hyphenation
    ],
)
def test_what_does_not_change_the_question_passes(a: str, b: str) -> None:
    assert verify.verify(a, b).ok


def test_a_reworded_prompt_is_left_to_the_threshold_and_the_guard() -> None:
    # Not the same sentence: the alignment rule abstains rather than guess.
    a, b = "How do I stop my toilet from running?", "the toilet keeps running after I flush, how do I fix it"
    assert verify.structure(a, b).ok


# ---- the part/place rule: a different member of one kind of part or place, however reworded


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # the burned held-out 1 leak: the rest of the sentence changed too, so the alignment abstains
        ("Why does my tooth hurt at the gum line?", "Why does my tooth hurt when I bite down on the back?"),
        ("My elbow aches after tennis, why?", "why does my wrist ache after playing tennis"),
        ("There's a damp patch on the bedroom ceiling", "how do I fix a damp spot on the basement wall"),
        ("the hinge of my laptop creaks, is that bad", "Why does my laptop trackpad creak when I press it?"),
    ],
)
def test_a_different_part_or_place_is_refused_however_the_sentence_is_worded(a: str, b: str) -> None:
    assert verify.structure(a, b).ok  # reworded: the alignment rule cannot tell
    assert verify.parts(a, b) == verify.Verdict(False, verify.PART)
    assert verify.verify(a, b).reason == verify.PART


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("My stomach hurts after I eat", "why does my belly ache after meals"),  # folded synonyms: one member
        ("How do I change a flat tire?", "What are the steps to change a flat tyre?"),  # spelling
        ("Why does my knee hurt?", "what causes pain in the knee when I walk downstairs"),  # one side more specific
    ],
)
def test_the_same_part_named_two_ways_or_only_once_passes_the_part_rule(a: str, b: str) -> None:
    assert verify.parts(a, b).ok


# ---- the contrast rule: each prompt names a different side of one contrast family, however reworded


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # the burned held-out 2 leaks: a reworded opposite and a reworded role
        ("How do I stop my bread dough from rising too much?", "my dough barely rises at all, what am I doing wrong"),
        (
            "As the seller, what do I have to disclose about the roof?",
            "I'm buying a house, what should I ask the owners about the roof?",
        ),
        (
            "What should I pack for a trip somewhere really humid?",
            "I'm travelling somewhere very dry, what should I bring?",
        ),
        ("why is my laptop fan so loud when it's idle", "What makes a laptop fan stay quiet even under heavy load?"),
        ("my landlord won't return the deposit", "as a tenant how do I get my deposit back"),
    ],
)
def test_a_different_side_of_one_contrast_is_refused_however_the_sentence_is_worded(a: str, b: str) -> None:
    assert verify.contrasts(a, b) == verify.Verdict(False, verify.CONTRAST)
    assert verify.contrasts(b, a) == verify.Verdict(False, verify.CONTRAST)
    assert not verify.verify(a, b).ok


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I clean a dirty oven?", "what's the best way to get my filthy oven clean"),  # one side names both
        ("Can my landlord raise the rent?", "is my landlord allowed to increase my rent"),  # the same side
        ("How do I sell my car?", "what's the best way to get rid of my old car"),  # only one side names any
    ],
)
def test_the_same_side_or_both_sides_pass_the_contrast_rule(a: str, b: str) -> None:
    assert verify.contrasts(a, b).ok


# ---- the exchange rule: two shared words in each other's place, however reworded


def test_a_reworded_reversal_is_refused_as_an_order() -> None:
    a, b = "Can a cat scratch give a human an infection?", "Can a human give a cat an infection?"
    assert cacheguard.check(a, b).ok  # not the same sentence: the guard's order rule cannot see it
    assert verify.verify(a, b) == verify.Verdict(False, "order")


def test_a_block_moved_to_the_front_is_no_exchange() -> None:
    a, b = "How long should I wait to swim after eating?", "After eating, how long should I wait before swimming?"
    assert verify.exchanged(a, b).ok


# ---- the guard's rules, through the verifier


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("How long do I boil 3 eggs?", "How long do I boil 6 eggs?", "number"),
        ("Can I freeze cooked rice?", "Can I not freeze cooked rice?", "negation"),
        ("How do I read a file in Python?", "How do I read a file in Java?", "entity"),
        ("How do I convert USD to EUR?", "How do I convert EUR to USD?", "order"),
    ],
)
def test_the_guards_rules_come_first_and_keep_their_names(a: str, b: str, reason: str) -> None:
    assert verify.verify(a, b) == verify.Verdict(False, reason)


def test_every_reason_is_a_stable_metric_label() -> None:
    assert set(verify.REASONS) == {
        "number",
        "negation",
        "entity",
        "order",
        "substitution",
        "addition",
        "part",
        "contrast",
        "unproven",
    }
    assert verify.UNAVAILABLE not in verify.REASONS


def test_the_verdict_is_the_same_either_way_round() -> None:
    for p in evaluate.load_pairs(verification.DEV):
        assert verify.verify(p.a, p.b) == verify.verify(p.b, p.a), (p.a, p.b)


def test_the_same_text_always_passes() -> None:
    assert verify.verify("How do I bathe my dog?", "How do I bathe my dog?") == verify.SAME


# ---- in the cache stage: a candidate passes the check before it is served; a failing check never serves


async def test_a_candidate_the_check_refuses_is_a_miss_labelled_with_the_reason() -> None:
    stored, changed = "What notice does an employer have to give?", "What notice does an employee have to give?"
    cache, embedder = make_cache(similarity_threshold=0.9)
    await miss_then_store(cache, chat(stored), answer("Two weeks."))
    embedder.tie(changed, like=stored, cosine=0.97)
    lookup = await cache.lookup(ALICE, chat(changed), {})
    assert lookup is not None
    assert (lookup.state, lookup.check) == (MISS, verify.SUBSTITUTION)
    assert cache.stats.guard_reasons == {verify.SUBSTITUTION: 1}


async def test_a_candidate_the_check_passes_is_a_hit_labelled_pass() -> None:
    stored, asked = "How do I fix a flat bike tyre?", "how can I repair a flat bike tyre"
    cache, embedder = make_cache(similarity_threshold=0.9)
    await miss_then_store(cache, chat(stored), answer())
    embedder.tie(asked, like=stored, cosine=0.95)
    lookup = await cache.lookup(ALICE, chat(asked), {})
    assert lookup is not None
    assert (lookup.state, lookup.check) == (HIT, "pass")


async def test_a_check_that_raises_bypasses_and_never_serves() -> None:
    stored, asked = "How do I fix a flat bike tyre?", "how can I repair a flat bike tyre"
    cache, embedder = make_cache(similarity_threshold=0.9)
    await miss_then_store(cache, chat(stored), answer())
    embedder.tie(asked, like=stored, cosine=0.99)

    def broken(new: str, stored: str) -> verify.Verdict:
        raise RuntimeError("a bug in a rule")

    cache.verifier = broken
    lookup = await cache.lookup(ALICE, chat(asked), {})
    assert lookup is not None
    assert (lookup.state, lookup.check, lookup.entry) == (BYPASS, verify.UNAVAILABLE, None)
    assert not lookup.storable
    assert cache.stats.verify_failures == 1
    assert cache.stats.semantic_hits == 0
    # An exact hit needs no verification and is served as before.
    exact = await cache.lookup(ALICE, chat(stored), {})
    assert exact is not None
    assert (exact.state, exact.reason) == (HIT, "exact")


async def test_verify_false_leaves_the_guard_alone_at_its_own_threshold() -> None:
    stored, changed = "What notice does an employer have to give?", "What notice does an employee have to give?"
    cache, embedder = make_cache(similarity_threshold=0.9, verify=False)
    await miss_then_store(cache, chat(stored), answer("Two weeks."))
    embedder.tie(changed, like=stored, cosine=0.97)
    lookup = await cache.lookup(ALICE, chat(changed), {})
    assert lookup is not None
    assert lookup.state == HIT  # what the guard alone does with a swap it has no list for


def test_a_verification_takes_well_under_two_milliseconds() -> None:
    cold, warm = verification.timing(evaluate.load_pairs(verification.DEV)[:200], rounds=1)
    assert cold < 2000
    assert warm < 2000
