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

What it enumerates is the safe direction: words that mean the same (fix/repair, photo/picture). A synonym it does
not know costs one backend call; a substitution it does not know to be one would have served a wrong answer.
Prompts that differ in many words (a reworded paraphrase) are left to rules 4 and 5, the guard and the similarity
threshold (0.79: no false hit on the development data, plus a margin; shared.cache.config).

Deterministic, no model, no I/O; a text is analysed once (memoised). `verify` never raises for any text: the
cache treats an exception as a failed verification all the same (a BYPASS, never a hit).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from shared.cache import guard as cacheguard
from shared.cache.config import VERIFIED_SIMILARITY_THRESHOLD
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
REASONS = (*cacheguard.REASONS, SUBSTITUTION, ADDITION, PART, CONTRAST)

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
    # Passed because the prompts are not the same sentence: the alignment rule could not judge them.
    reworded: bool = False


SAME = Verdict(True)
REWORDED = Verdict(True, reworded=True)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that carry no content of their own: articles, pronouns, auxiliaries, the framing of a question ("what's
# the best way to", "can someone explain"), politeness, and the prepositions that do not locate anything (in/on/at
# are interchangeable in prompts). Negations are here too: the guard compares them. Spatial words are not here:
# "behind the knee" and "under the knee" are different places.
_FUNCTION = _words(
    """
    a an the this that these those some any each every all both either neither another other such same
    my your our their his her its me you we they he she it i us them him myself yourself itself one ones
    what which who whom whose when where why how whats whos hows whatre hows whatever however
    is are was were be been being am do does did done doing have has had having get gets got getting gotten
    can could should would will shall may might must need needs want wants wanna gonna ought
    and or but if then so than as of at by for with about to from in on into onto within via per during
    not no never don doesn didn isn aren wasn weren won wouldn couldn shouldn can't cannot hasn haven hadn ain
    s t d ll ve re m
    there here just also even still really actually exactly basically simply only quite very too
    please pls plz thanks thank hi hello hey ok okay question help
    way ways best easiest simplest fastest good great right proper correct correctly properly method methods step
    steps process procedure tip tips trick tricks secret advice idea ideas approach option options
    someone anyone somebody anybody something anything thing things stuff
    explain explanation tell know understand mean means meaning define definition describe
    possible able go going try trying usually typically normally generally ever
    like kind sort type bit
    """
)
# Multi-word expressions folded to one token before anything else (longest first).
_PHRASES = (
    ("get rid of", "remove"),
    ("take out", "remove"),
    ("set up", "setup"),
    ("sign up", "register"),
    ("log in", "login"),
    ("sign in", "login"),
    ("log into", "login"),
    ("look up", "find"),
    ("figure out", "find"),
    ("find out", "find"),
    ("hook up", "connect"),
    ("turn on", "switchon"),
    ("power on", "switchon"),
    ("switch on", "switchon"),
    ("turn off", "switchoff"),
    ("switch off", "switchoff"),
    ("power off", "switchoff"),
    ("speed up", "faster"),
    ("at home", ""),
    ("in general", ""),
    ("as well", ""),
    ("a lot of", "much"),
    ("a lot", "much"),
    ("lots of", "much"),
    ("very little", "little"),
    ("right now", ""),
    ("these days", ""),
)
# Words that mean the same in a prompt, folded to the first of each group. Only true equivalents: a pair missing
# here costs a backend call, a pair wrongly here could serve a wrong answer.
_SYNONYMS = (
    "fix repair mend",
    "buy purchase",
    "obtain acquire",
    "make create build prepare cook",
    "start begin",
    "quit resign",
    "remove delete erase eliminate",
    "quick fast rapid speedy",
    "faster quicker",
    "quickly fast rapidly",
    "cheap inexpensive affordable",
    "easy simple",
    "restore recover",
    "specific particular",
    "biggest largest",
    "highest tallest",
    "enable switchon",
    "disable switchoff",
    "wise smart",
    "dispute contest challenge",
    "big large huge",
    "small tiny",
    "computer pc",
    "phone cellphone smartphone mobile",
    "photo picture pic image",
    "tv television",
    "tire tyre",
    "much many",
    "little few",
    "center centre middle",
    "carpet rug",
    "car vehicle automobile",
    "job work employment",
    "boss manager supervisor",
    "colleague coworker",
    "salary pay wage wages paycheck",
    "doctor physician",
    "medicine medication meds",
    "stomach belly tummy abdomen",
    "tired exhausted fatigued",
    "ache pain",
    "lawyer attorney",
    "legal lawful allowed permitted",
    "fridge refrigerator",
    "folder directory",
    "app application program software",
    "email mail",
    "website site",
    "wifi wi-fi",
    "travel trip journey",
    "vacation holiday",
    "abroad overseas",
    "plane airplane aircraft",
    "luggage baggage",
    "kid child",
    "mom mother",
    "dad father",
    "show display",
    "find locate",
    "see view",
    "reduce lower decrease",
    "increase raise",
    "improve boost enhance",
    "connect link",
    "stop prevent",
    "use utilize",
    "require need",
    "coriander cilantro",
    "ill sick",
    "symptom sign",
    "clear clean",
    "house home",
    "hard difficult",
    "typical average",
    "frequent often",
    "safe ok",
)
_NUMBER_WORDS = _words(
    """
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million
    billion dozen half twice
    """
)
_SPELLING = ((re.compile(r"our$"), "or"), (re.compile(r"ise$"), "ize"), (re.compile(r"tre$"), "ter"))
_TOKEN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*|\d[\d.,:/]*")


def _build_synonyms() -> dict[str, str]:
    table: dict[str, str] = {}
    for group in _SYNONYMS:
        words = group.split()
        head = _stem(words[0])
        for w in words:
            table[_stem(w)] = head
    return table


@lru_cache(maxsize=8192)
def _stem(word: str) -> str:
    """A light suffix stripper: plurals, -ing, -ed, -ly; enough to fold inflections, never to merge two words."""
    for pattern, repl in _SPELLING:
        if len(word) > 5:
            word = pattern.sub(repl, word)
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
        return word[:-1] if len(word) > 3 and word[-1] == word[-2] else word
    if len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        word = word[:-2] if not word.endswith("ied") else word[:-3] + "y"
        return word[:-1] if len(word) > 3 and word[-1] == word[-2] else word
    if len(word) > 4 and word.endswith("ly"):
        return word[:-2]
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_SYNONYM: dict[str, str] = _build_synonyms()


def _build_parts() -> dict[str, frozenset[str]]:
    table: dict[str, frozenset[str]] = {}
    for kind, words in PART_KINDS.items():
        for w in words:
            stem = _SYNONYM.get(_stem(w), _stem(w))
            table[stem] = table.get(stem, frozenset()) | {kind}
    return table


_PART_KIND: dict[str, frozenset[str]] = _build_parts()


def _build_contrasts() -> dict[str, frozenset[tuple[int, int]]]:
    """Each word (as `_tokens` folds it) to the (family, side) pairs it names."""
    table: dict[str, frozenset[tuple[int, int]]] = {}
    for family, sides in enumerate(CONTRAST_FAMILIES):
        for side, words in enumerate(sides):
            for w in words.split():
                stem = _SYNONYM.get(_stem(w), _stem(w))
                table[stem] = table.get(stem, frozenset()) | {(family, side)}
    return table


_CONTRAST: dict[str, frozenset[tuple[int, int]]] = _build_contrasts()
_FUNCTION_STEMS = frozenset(_stem(w) for w in _FUNCTION) | _FUNCTION
_PHRASE_RES = tuple((re.compile(rf"\b{re.escape(p)}\b"), r) for p, r in _PHRASES)


def _content_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    for pattern, repl in _PHRASE_RES:
        if pattern.search(text):
            text = pattern.sub(repl, text)
    return text


# Removed before aligning: articles, possessives and politeness change no question ("my laptop" / "the laptop").
_DROP = _words(
    """
    a an the my your our their his her its this that these those some
    please pls plz thanks thank hi hello hey just really actually exactly basically simply question ok okay
    so also even still very quite
    """
)


@lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[tuple[str, ...], frozenset[int]]:
    """The prompt's words in order (stemmed, synonyms folded, fillers dropped), and which of them are content."""
    words: list[str] = []
    content: set[int] = set()
    for raw in _TOKEN.findall(_content_text(text)):
        word = raw.replace("-", "")
        if word in _DROP or raw[0].isdigit() or word in _NUMBER_WORDS:
            continue  # numbers are the guard's: it compares their values, whatever the words
        stem = _stem(word)
        if word in _FUNCTION or stem in _FUNCTION_STEMS:
            words.append(stem)
            continue
        content.add(len(words))
        words.append(_SYNONYM.get(stem, stem))
    return tuple(words), frozenset(content)


def exchanged(new: str, stored: str) -> Verdict:
    """Two of the words both prompts share stand in each other's place, however the rest is worded.

    "Can a cat scratch give a human an infection?" / "Can a human give a cat an infection?": the guard's order rule
    wants the same sentence; here only the content words both prompts have are compared, in order, so a reworded
    reversal is one too. A block moved to the front ("after eating, how long should I wait") is no exchange.
    """
    a, content_a = _tokens(new)
    b, content_b = _tokens(stored)
    shared = {a[i] for i in content_a} & {b[j] for j in content_b}
    seq_a = tuple(a[i] for i in sorted(content_a) if a[i] in shared)
    seq_b = tuple(b[j] for j in sorted(content_b) if b[j] in shared)
    return Verdict(False, cacheguard.ORDER) if _one_for_another(seq_a, seq_b) else SAME


def _one_for_another(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """b is a with two single words exchanged around one or two words that each sequence has once (X gives Y)."""
    if len(a) != len(b) or a == b or Counter(a) != Counter(b):
        return False
    i = 0
    while a[i] == b[i]:
        i += 1
    j = len(a)
    while a[j - 1] == b[j - 1]:
        j -= 1
    ra, rb = a[i:j], b[i:j]
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
    back = _aligned(stored, new)
    return back if not back.ok else (REWORDED if there.reworded or back.reworded else SAME)


def _aligned(new: str, stored: str) -> Verdict:
    a, content_a = _tokens(new)
    b, content_b = _tokens(stored)
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
    words, content = _tokens(text)
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
    words, content = _tokens(text)
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
    """Whether the answer stored for `stored` may be served for `new`; else the first check that objects."""
    if new == stored:
        return SAME
    guard = cacheguard.check(new, stored)
    if not guard.ok:
        return Verdict(False, guard.reason)
    shape = structure(new, stored)
    if not shape.ok:
        return shape
    order = exchanged(new, stored)
    if not order.ok:
        return order
    part = parts(new, stored)
    if not part.ok:
        return part
    contrast = contrasts(new, stored)
    return contrast if not contrast.ok else shape
