"""The proof a semantic candidate must give (shared.cache.proof), rule by rule, and its place in the verification."""

from __future__ import annotations

import time

import pytest

from shared.cache import proof, verify


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # The same words, a different question frame, filler, case and punctuation.
        ("How do I reset my password?", "how can i reset my password please"),
        ("How do you boil an egg?", "how can I boil an egg"),
        ("What's the best way to store fresh basil?", "how do I store fresh basil"),
        ("Which city is the capital of Australia?", "quick question: which city is the capital of Australia?"),
        ("What is a closure in JavaScript?", "Can you explain closures in JavaScript?"),
        # Inflections by WordNet's lemmas, synonyms the verification folds, WordNet synonyms in their first sense.
        ("How do I fix a flat bike tyre?", "how can I repair a flat bike tyre"),
        ("Is it safe for a baby to sleep on its side?", "Is it safe for an infant to sleep on its side?"),
        ("What is the largest desert in the world?", "Which desert is the biggest in the world?"),
        # A block moved keeps its neighbours around the pivot word.
        ("My screen flickers after the update, how do I fix it?", "How do I fix my screen flickering after an update?"),
    ],
)
def test_a_pair_whose_every_term_is_matched_is_proven(a: str, b: str) -> None:
    assert proof.proven(a, b)
    assert proof.proven(b, a)
    assert verify.verify(a, b).ok


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # A content word on one side only, however common: narrower, wider or another thing.
        ("How do I clean my oven?", "How do I clean my oven door?"),
        ("Can I give my dog ibuprofen?", "Can I give my cat ibuprofen?"),
        ("How do I install Docker on Ubuntu?", "How do I uninstall Docker on Ubuntu?"),
        ("What does a landlord have to fix?", "What does a tenant have to fix?"),
        ("Can I wash wool in the washing machine?", "Can I wash silk in the washing machine?"),
        ("Why does my knee hurt on the inside?", "Why does my knee hurt on the outside?"),
        # Reworded paraphrases too: unproven is a miss unless a judge says "same".
        ("What's a good way to keep cut flowers fresh longer?", "how can i make my bouquet last more days in the vase"),
    ],
)
def test_a_word_left_unmatched_on_either_side_is_unproven(a: str, b: str) -> None:
    assert not proof.proven(a, b)
    assert not proof.proven(b, a)
    assert not verify.verify(a, b).ok


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Where do I renew my passport?", "When do I renew my passport?"),  # question word
        ("Why do cats purr?", "How do cats purr?"),
        ("Can I eat raw eggs while pregnant?", "Should I eat raw eggs while pregnant?"),  # modality
        ("Who is the president of France?", "Who was the president of France?"),  # tense
        ("Cheap flights from Paris", "Cheap flights to Paris"),  # relation
        ("Can I use another charger for my phone?", "Can I use the same charger for my phone?"),
        ("Can I take ibuprofen and paracetamol?", "Can I take ibuprofen or paracetamol?"),
        ("Do all birds fly?", "Do most birds fly?"),  # quantifier
    ],
)
def test_the_words_that_change_a_question_without_being_content_must_match(a: str, b: str) -> None:
    assert not proof.proven(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Should I tip my waiter?", "Should my waiter tip me?"),
        ("Can my landlord sue me?", "Can I sue my landlord?"),
        ("How do I know if my dog is sick?", "How does my dog know if I am sick?"),
        ("What should I tell my doctor?", "What should my doctor tell me?"),
        ("Do I need to tell him?", "Does he need to tell me?"),
    ],
)
def test_who_does_what_to_whom_must_match(a: str, b: str) -> None:
    assert not proof.proven(a, b)
    assert not verify.verify(a, b).ok


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How long after eating can I swim?", "How long after swimming can I eat?"),
        ("Should I pay off debt before investing?", "Should I invest before paying off debt?"),
        ("Is it bad to drink coffee after waking up?", "Is it bad to wake up after drinking coffee?"),
    ],
)
def test_what_stands_on_each_side_of_a_pivot_must_match(a: str, b: str) -> None:
    assert not proof.proven(a, b)


def test_a_comparative_only_matches_its_own_degree() -> None:
    # Held-out 4's one false hit: both words of a crossed comparative matched by lemma.
    assert not proof.proven("How do I make a small room look bigger?", "How do I make a big room look smaller?")
    assert not proof.proven("Is a bigger dog better for kids?", "Is a big dog better for kids?")
    assert proof.proven("What is the largest lake?", "Which is the biggest lake?")


def test_negations_are_counted() -> None:
    assert not proof.proven("Can I take ibuprofen with coffee?", "Can I not take ibuprofen with coffee?")
    assert not proof.proven("How do I thicken a sauce with flour?", "How do I thicken a sauce without flour?")


def test_a_rare_wordnet_sense_does_not_make_synonyms() -> None:
    # "dog" shares a synset with "frump" only in its second sense, and "buy" with "bribe" in its third.
    assert not proof.proven("How do I deal with a dog?", "How do I deal with a frump?")
    assert not proof.proven("Should I buy the inspector?", "Should I bribe the inspector?")


def test_the_proof_is_the_last_word_of_the_verification() -> None:
    # A rule's objection comes first and is final; a pair every rule passes but the proof cannot match is UNPROVEN,
    # the one verdict a judge deployment may overrule.
    assert verify.verify("How long do I roast a 4 kg turkey?", "How long do I roast a 7 kg turkey?").reason == "number"
    assert verify.verify("Why do cats purr?", "How do cats purr?") == verify.Verdict(False, verify.UNPROVEN)
    assert verify.UNPROVEN in verify.REASONS


def test_terms_are_memoised_and_any_text_is_read_without_error() -> None:
    for text in ("", "   ", "???", "\u0000\ud7ff", "a" * 5000, "I I I me me you", "after", "how to"):
        proof.terms(text)
        assert isinstance(proof.proven(text, "How do I reset my password?"), bool)
    assert proof.terms("How do I reset my password?") is proof.terms("How do I reset my password?")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Can I charge my phone from my laptop?", "Can I charge my laptop from my phone?"),
        ("Do I add salt to the water before the pasta goes in?", "Do I add salt to the pasta before the water is in?"),
        ("Can a tenant be evicted by a landlord?", "Can a landlord be evicted by a tenant?"),
    ],
)
def test_a_preposition_both_use_keeps_what_it_governs(a: str, b: str) -> None:
    assert not proof.proven(a, b)
    assert not verify.verify(a, b).ok


def test_a_long_candidate_is_unproven_without_being_read() -> None:
    # Beyond verify.MAX_CHARS the alignment's quadratic cost would hold the event loop; such a prompt is a miss.
    long = "How do I fix my bike? " * 60
    assert len(long) > verify.MAX_CHARS
    assert verify.verify(long, long + "x") == verify.Verdict(False, verify.UNPROVEN)


def test_reading_a_prompt_costs_time_in_proportion_to_its_length() -> None:
    # Each pronoun's role is found in one pass from the end: 4,000 pronouns used to cost 0.7 s (a scan per pronoun).
    started = time.thread_time()
    proof.terms("I " * 4000 + "me")
    assert time.thread_time() - started < 0.1
