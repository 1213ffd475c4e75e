"""Verification of a semantic-cache candidate: is the stored prompt the same question as the new one?

The embedding finds a candidate; this decides whether it may be served. MiniLM scores a question and the same
question with one content word swapped ("bathe my dog" / "bathe my cat", "employer" / "employee", "archive" /
"restore" a channel, "upstairs" / "downstairs") between 0.82 and 0.97, above many true paraphrases, so no
threshold separates them and no list of opposites can name them all. The check therefore works on the shape of
the difference, not on which words differ:

1. the near-miss guard (`shared.cache.guard`): numbers, negation and opposites it knows, named entities, order;
2. ``substitution``: align the two prompts' content words (lowercased, lightly stemmed, function and
   question-frame words dropped, known synonyms folded together). When the prompts share most of their content
   and each has a word or short phrase the other lacks, one was swapped for the other: a different question,
   whatever the words are;
3. ``addition``: the prompts share their content except a word or two that only one has ("clean the oven" /
   "clean the oven door"): the longer one asks something narrower;
4. ``order`` (again, for rewordings): two single words both prompts share stand in each other's place ("can a cat
   scratch give a human an infection" / "can a human give a cat an infection");
5. ``part``: each prompt names a different member of one kind of part or place (anatomy, a building and its
   fittings, a vehicle, a device, a position; `shared.cache.verify_words`), however the rest is worded ("at the
   gum line" / "when I bite down on the back");
6. ``contrast``: each prompt names a different side of one contrast family (opposite qualities, the two parties
   to one transaction, actions that undo each other, relatives; `shared.cache.verify_words`), and neither names
   the other's side, however the rest is worded ("as the seller, what must I disclose" / "I'm buying, what
   should I ask"; "dough rising too much" / "dough that barely rises").

These rules look for a known kind of difference, and three rounds of held-out pairs showed that a rewording whose
difference is of a kind nobody listed gets past them (18 of 307 fresh near misses in the third round). So they are
no longer what lets a candidate through: 7. the **proof** (`shared.cache.proof`) is. A candidate is served only
when every term of each prompt is matched in the other (the same word, a folded synonym, a WordNet synonym, the same
question word, modality, relation words and negations) and no rule above objects. A reworded paraphrase is
UNPROVEN: a miss that costs one backend call, unless a judge deployment (`shared.cache.judge`) says "same".

Deterministic, no model, no I/O; a text is analysed once (memoised). `verify` never raises for any text: the
cache treats an exception as a failed verification all the same (a BYPASS, never a hit).
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from shared.cache import guard as cacheguard
from shared.cache import proof
from shared.cache.config import VERIFIED_SIMILARITY_THRESHOLD
from shared.cache.verify_text import SYNONYM, stem, tokens
from shared.cache.verify_words import CONTRAST_FAMILIES, PART_KINDS

# The cosine similarity above which the semantic cache considers a stored prompt with this verification on
# (shared.cache.config explains how it was chosen).
DEFAULT_SIMILARITY_THRESHOLD = VERIFIED_SIMILARITY_THRESHOLD

SUBSTITUTION = "substitution"
ADDITION = "addition"
PART = "part"
CONTRAST = "contrast"
UNAVAILABLE = "unavailable"  # verification raised: the cache bypasses
# Every reason a candidate can be refused with; stable, they are metric labels.
# Every rule passed but the proof could not match every term: a miss, unless a judge deployment says "same".
UNPROVEN = proof.UNPROVEN
REASONS = (*cacheguard.REASONS, SUBSTITUTION, ADDITION, PART, CONTRAST, UNPROVEN)

# Longer texts are not checked locally: the alignment's cost grows with the square of the length (a 2,000-character
# prompt of one repeated word took 0.1 s of the event loop, 14,000 characters of prose 0.24 s), and a prompt that
# long repeats as an exact match or not at all. Such a candidate is UNPROVEN: a miss, or the judge's question when
# one is configured. The local embedder reads 800 characters; a pool deployment's embedder up to 16,000.
MAX_CHARS = 1000
# A swap is at most this many content words on either side; more than that is a rewording, left to the threshold.
MAX_SWAP_WORDS = 3
# One-sided extra words: at most this many, and the rest of the content shared.
MAX_ADDED_WORDS = 2
# Share of the longer prompt's words the two must have in common, in order, to count as the same sentence.
SAME_FRAME = 0.6
# The same, when the difference is one contiguous span.
ONE_SPAN_FRAME = 0.5


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str | None = None  # one of REASONS when not ok


SAME = Verdict(True)
# The alignment rule abstains on prompts that are not the same sentence: it passes them to the other rules and the
# proof.
REWORDED = SAME


def _build_parts() -> dict[str, frozenset[str]]:
    table: dict[str, frozenset[str]] = {}
    for kind, words in PART_KINDS.items():
        for w in words:
            folded = SYNONYM.get(stem(w), stem(w))
            table[folded] = table.get(folded, frozenset()) | {kind}
    return table


_PART_KIND: dict[str, frozenset[str]] = _build_parts()


def _build_contrasts() -> dict[str, frozenset[tuple[int, int]]]:
    """Each word (as `tokens` folds it) to the (family, side) pairs it names."""
    table: dict[str, frozenset[tuple[int, int]]] = {}
    for family, sides in enumerate(CONTRAST_FAMILIES):
        for side, words in enumerate(sides):
            for w in words.split():
                folded = SYNONYM.get(stem(w), stem(w))
                table[folded] = table.get(folded, frozenset()) | {(family, side)}
    return table


_CONTRAST: dict[str, frozenset[tuple[int, int]]] = _build_contrasts()


def exchanged(new: str, stored: str) -> Verdict:
    """Two of the words both prompts share stand in each other's place, however the rest is worded.

    "Can a cat scratch give a human an infection?" / "Can a human give a cat an infection?": the guard's order rule
    wants the same sentence; here only the content words both prompts have are compared, in order, so a reworded
    reversal is one too. A block moved to the front ("after eating, how long should I wait") is no exchange.
    """
    a, content_a = tokens(new)
    b, content_b = tokens(stored)
    shared = {a[i] for i in content_a} & {b[j] for j in content_b}
    seq_a = tuple(a[i] for i in sorted(content_a) if a[i] in shared)
    seq_b = tuple(b[j] for j in sorted(content_b) if b[j] in shared)
    return Verdict(False, cacheguard.ORDER) if _one_for_another(seq_a, seq_b) else SAME


def _one_for_another(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """b is a with two single words exchanged around one or two words that each sequence has once (X gives Y)."""
    span = cacheguard.rearranged(a, b)
    if span is None:
        return False
    ra, rb = span
    if not 3 <= len(ra) <= 4 or rb != (ra[-1], *ra[1:-1], ra[0]):
        return False
    counts = Counter(a)
    return all(counts[w] == 1 for w in ra)


def structure(new: str, stored: str) -> Verdict:
    """The alignment rule alone: the same sentence with a content word or short phrase swapped, or added.

    An alignment is not symmetric (difflib matches greedily from the first text), and the cache may hold either
    prompt of a pair: both ways are aligned, and a refusal either way is a refusal.
    """
    there = _aligned(new, stored)
    if not there.ok:
        return there
    return _aligned(stored, new)


def _aligned(new: str, stored: str) -> Verdict:
    a, content_a = tokens(new)
    b, content_b = tokens(stored)
    if a == b:
        return SAME
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    blocks = matcher.get_matching_blocks()
    equal = sum(size for _, _, size in blocks)
    # Only a sentence whose frame is kept is a minimal pair; a reworded prompt is left to the threshold and guard.
    longest = max(len(a), len(b))
    changes = sum(tag != "equal" for tag, *_ in matcher.get_opcodes())
    # The same sentence: most words kept in order, or all but one changed span ("the capital of X" / "the
    # largest city in X"). Otherwise it is a rewording, left to the threshold and the guard.
    if equal < SAME_FRAME * longest and not (changes == 1 and equal >= max(2, ONE_SPAN_FRAME * longest)):
        return REWORDED
    only_a: Counter[str] = Counter()
    only_b: Counter[str] = Counter()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        only_a.update(a[i] for i in range(i1, i2) if i in content_a)
        only_b.update(b[j] for j in range(j1, j2) if j in content_b)
    # A word that only moved is no difference (the guard judges order); nor is one written as two ("wi fi").
    only_a, only_b = only_a - only_b, only_b - only_a
    if only_a and only_b and _joined(only_a, only_b):
        return SAME
    na, nb = sum(only_a.values()), sum(only_b.values())
    if na and nb:
        return Verdict(False, SUBSTITUTION) if max(na, nb) <= MAX_SWAP_WORDS else REWORDED
    if na or nb:
        return Verdict(False, ADDITION) if max(na, nb) <= MAX_ADDED_WORDS else REWORDED
    return SAME


def _joined(x: Counter[str], y: Counter[str]) -> bool:
    """One side's words concatenated are the other side's single word."""
    if len(x) + len(y) < 3:
        return False
    xs, ys = list(x.elements()), list(y.elements())
    return ("".join(xs) in ys or "".join(reversed(xs)) in ys) or ("".join(ys) in xs or "".join(reversed(ys)) in xs)


@lru_cache(maxsize=4096)
def _parts(text: str) -> dict[str, frozenset[str]]:
    """The parts and places the prompt names, by kind (shared.cache.verify_words)."""
    words, content = tokens(text)
    found: dict[str, set[str]] = {}
    for i in content:
        for kind in _PART_KIND.get(words[i], ()):
            found.setdefault(kind, set()).add(words[i])
    return {kind: frozenset(names) for kind, names in found.items()}


def parts(new: str, stored: str) -> Verdict:
    """The part/place rule alone: each prompt names a member of one kind the other does not.

    "Why does my tooth hurt at the gum line?" / "Why does my tooth hurt when I bite down on the back?" share the
    tooth and differ in where: the alignment rule leaves so reworded a pair to the threshold, this does not.
    """
    a, b = _parts(new), _parts(stored)
    for kind in a.keys() & b.keys():
        if a[kind] - b[kind] and b[kind] - a[kind]:
            return Verdict(False, PART)
    return SAME


@lru_cache(maxsize=4096)
def _contrasts(text: str) -> dict[int, frozenset[int]]:
    """The sides of each contrast family the prompt names (shared.cache.verify_words)."""
    words, content = tokens(text)
    found: dict[int, set[int]] = {}
    for i in content:
        for family, side in _CONTRAST.get(words[i], ()):
            found.setdefault(family, set()).add(side)
    return {family: frozenset(sides) for family, sides in found.items()}


def contrasts(new: str, stored: str) -> Verdict:
    """The contrast rule alone: the prompts name different sides of one family, and no side in common.

    A prompt that names both sides ("how do I clean a dirty oven") is about both and is not refused by this rule.
    """
    a, b = _contrasts(new), _contrasts(stored)
    for family in a.keys() & b.keys():
        if not a[family] & b[family]:
            return Verdict(False, CONTRAST)
    return SAME


def verify(new: str, stored: str) -> Verdict:
    """Whether the answer stored for `stored` may be served for `new`; else the first check that objects.

    Served only when proven (`shared.cache.proof`: every term of each prompt matched in the other) and no rule
    objects; a rule's objection is final, UNPROVEN is the one a judge deployment may overrule.
    """
    if new == stored:
        return SAME
    if len(new) > MAX_CHARS or len(stored) > MAX_CHARS:
        return Verdict(False, UNPROVEN)  # see MAX_CHARS
    guard = cacheguard.check(new, stored)
    if not guard.ok:
        return Verdict(False, guard.reason)
    same = proof.proven(new, stored)
    # A proven pair may differ by a synonym the alignment rule does not know; its swap is no objection then.
    rules = (exchanged, parts, contrasts) if same else (structure, exchanged, parts, contrasts)
    for rule in rules:
        verdict = rule(new, stored)
        if not verdict.ok:
            return verdict
    return SAME if same else Verdict(False, UNPROVEN)
