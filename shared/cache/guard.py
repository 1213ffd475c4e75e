"""The near-miss guard of the semantic cache: is the answer stored for one prompt safe to give to another?

Sentence embeddings score a question and its near-misses as almost the same: with all-MiniLM-L6-v2 "convert USD
to EUR" and "convert EUR to USD" reach 0.994, and an inserted "not" costs about 0.04 (the reversal trap of
GPTCache #694). The similarity threshold keeps unrelated prompts apart (LiteLLM #12234) but cannot separate these,
so after the vector search this guard compares the two prompt texts (the lookup text, usually the last user
message) and rejects the hit, naming the first rule that fired:

* ``number``: the numbers differ. Digits (1,000 / 3.5 / 3,5), number words (five, twenty-one, two hundred, a
  dozen), ordinals (3rd, third), percentages, money, dates, times and versions; a number's unit is part of it, so
  "5 km" and "5 miles" differ while "5 km" and "five kilometres" do not.
* ``negation``: the prompts negate different things: each negation (not, no, never, n't, without, except, none,
  nor, neither, cannot, non-...) is counted with the word it applies to, so a negation on one side only is a
  difference even when both sides negate something else ("signing a non-compete" / "not signing a
  non-compete"); or a word is swapped for its opposite (enable/disable, on/off, increase/decrease,
  advantages/disadvantages, pair/unpair, ...).
* ``entity``: a named thing in one prompt is missing from the other: capitalised words that are not merely
  sentence-initial, acronyms, mixed-case names (iPhone, PostgreSQL), code identifiers (snake_case, dotted.names,
  C#), quoted strings, URLs and paths, and a short list of names usually written in lowercase (python, linux,
  usd, monday, ...). Comparison ignores case, so "python" and "Python" match.
* ``order``: the same terms stand in a different direction: "from X to Y", "X to/into Y", "X vs Y", "X than Y",
  "X before/after Y" relations that run the other way, or the same words with two terms swapped ("can a list
  contain a tuple" / "can a tuple contain a list"); a swap around "and"/"or" is symmetric and passes.

It errs towards a miss: a rejected hit costs one backend call, a wrong hit serves a wrong answer. Regular
expressions only, deterministic; a text is analysed once (memoised), in about 25 µs for a typical prompt.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

# Calibrated with this guard on; defined with the other cache settings, named here for the evaluation's readers.
from shared.cache.config import DEFAULT_SIMILARITY_THRESHOLD  # noqa: F401 - re-exported, see above
from shared.cache.guard_text import (
    CAMEL,
    QUOTED,
    QUOTES,
    SQUASH,
    Token,
    count_numbers,
    name_key,
    stem,
    term_of,
    tokenize,
)
from shared.cache.guard_words import (
    ALIASES,
    DETERMINERS,
    FUNCTION_WORDS,
    LOWERCASE_NAMES,
    NEGATING_PREFIXES,
    NEGATIONS,
    NOT_NAMES,
    OPPOSITE,
    SENTENCE_OPENERS,
    SYMMETRIC,
)

NUMBER = "number"
NEGATION = "negation"
ENTITY = "entity"
ORDER = "order"
REASONS = (NUMBER, NEGATION, ENTITY, ORDER)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str | None = None  # one of REASONS when not ok; stable, it is a metric label


SAFE = Verdict(True)


@dataclass(frozen=True, slots=True)
class _Analysis:
    numbers: Counter[tuple[str, str]]
    negations: Counter[str]  # what each negation applies to (see _negations): compared as a multiset
    words: frozenset[str]
    entities: frozenset[str]  # keys (see name_key)
    phrases: frozenset[str]  # squashed quoted strings, URLs, paths
    keys: tuple[str, ...]  # every word's and number's key, in order, for presence tests
    key_set: frozenset[str]
    squashed: str  # lowercase letters and digits only, for quoted strings and URLs
    relations: tuple[tuple[frozenset[str], frozenset[str]], ...]
    tokens: tuple[Token, ...]


# ---- entities


def _case_modes(tokens: list[Token]) -> tuple[bool, bool]:
    """(ALL CAPS, Title Case): such texts capitalise everything, so there capitals name nothing."""
    words = caps = capitalised = 0
    for t in tokens:
        if t.kind == "word" and t.text != t.low:
            if len(t.text) > 1 and t.text.isupper():
                caps += 1
            else:
                capitalised += 1
        words += t.kind == "word"
    rest = words - caps
    return words >= 3 and caps >= 0.6 * words, rest >= 5 and capitalised >= 0.7 * rest


def _entities(text: str, tokens: list[Token]) -> tuple[frozenset[str], frozenset[str]]:
    names: set[str] = set()
    phrases = (
        {SQUASH.sub("", "".join(g for g in m.groups() if g).lower()) for m in QUOTED.finditer(text)}
        if any(q in text for q in "\"'`")
        else set()
    )
    shouting, title = _case_modes(tokens)
    for t in tokens:
        if t.kind == "url":
            phrases.add(SQUASH.sub("", t.low))
            continue
        if t.kind != "word":
            continue
        w, low = t.text, t.low
        if w == low and w.isalpha():
            # The common case, a plain lowercase word: only the list of lowercase names applies.
            if low in LOWERCASE_NAMES:
                names.add(low)
            continue
        if low in NOT_NAMES:
            continue
        # snake_case, dotted.names (not abbreviations like e.g.), C#, C++
        code = "_" in w or w.endswith(("#", "++")) or ("." in w and any(len(p) > 1 for p in w.split(".")))
        mixed = bool(CAMEL.search(w)) and not shouting
        capital = (
            w[0].isupper() and not shouting and not title and not (t.start_of_sentence and low in SENTENCE_OPENERS)
        )
        if code or mixed or capital or low in LOWERCASE_NAMES:
            names.add(name_key(w))
    phrases.discard("")
    return frozenset(names), frozenset(phrases)


def _present(name: str, other: _Analysis) -> bool:
    keys = other.key_set
    if name in keys or stem(name) in keys or name + "s" in keys:
        return True
    if any(alias in keys or alias + "s" in keys for alias in ALIASES.get(name, ())):
        return True
    # Written as two words in the other prompt: "WiFi" / "Wi Fi".
    if any(x + y == name for x, y in itertools.pairwise(other.keys)):
        return True
    return _spelled_out(name, other.keys)


def _spelled_out(name: str, keys: tuple[str, ...]) -> bool:
    """An acronym whose letters begin consecutive content words of the other prompt: "IRA" / "individual
    retirement account", "AC" / "air conditioning". Two to six letters; function words never spell one ("IT" is
    not "in the")."""
    n = len(name)
    if not 2 <= n <= 6 or not name.isalpha():
        return False
    return any(
        all(len(k) >= 3 and k not in FUNCTION_WORDS and k[0] == c for k, c in zip(keys[i : i + n], name, strict=True))
        for i in range(len(keys) - n + 1)
    )


# ---- relations


def _span(tokens: list[Token], i: int, step: int) -> frozenset[str]:
    """Up to three content words next to a marker (step -1: before it, +1: after it), skipping determiners after."""
    words: list[str] = []
    j = i + step
    if step > 0:
        while j < len(tokens) and tokens[j].low in DETERMINERS:
            j += 1
    while 0 <= j < len(tokens) and len(words) < 3:
        t = tokens[j]
        if t.kind not in ("word", "num") or t.low in FUNCTION_WORDS:
            break
        words.append(term_of(t))
        j += step
    return frozenset(words)


def _relations(tokens: list[Token]) -> tuple[tuple[frozenset[str], frozenset[str]], ...]:
    out: list[tuple[frozenset[str], frozenset[str]]] = []
    to_at: int | None = None
    for i, t in enumerate(tokens):
        if t.kind == "punct" and t.low != ",":
            to_at = None
        low = t.low
        if low in ("to", "into", "onto", "towards", "toward", "vs", "versus", "than", "before", "->", "=>", "→"):
            pair = (_span(tokens, i, -1), _span(tokens, i, 1))
            if low in ("to", "into", "onto", "towards", "toward"):
                to_at = i
        elif low == "after":
            pair = (_span(tokens, i, 1), _span(tokens, i, -1))
        elif low == "from" and to_at is not None:
            # "to Y from X": the source comes second.
            pair = (_span(tokens, i, 1), _span(tokens, to_at, 1))
        else:
            continue
        if pair[0] and pair[1]:
            out.append(pair)
    return tuple(out)


def _opposed(a: tuple[frozenset[str], frozenset[str]], b: tuple[frozenset[str], frozenset[str]]) -> bool:
    """a runs from what b runs to, and to what b runs from (terms on both sides of one relation do not count)."""
    (s1, d1), (s2, d2) = a, b
    s1, d1, s2, d2 = s1 - d1, d1 - s1, s2 - d2, d2 - s2
    crossed = bool(s1 & d2) and bool(d1 & s2)
    straight = bool(s1 & s2) and bool(d1 & d2)
    return crossed and not straight


def _sequence(tokens: tuple[Token, ...]) -> tuple[str, ...]:
    return tuple(term_of(t) for t in tokens if t.kind in ("word", "num", "sym") or t.low == ",")


def rearranged(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """When b holds a's terms in another order, the stretch of each between their common start and end."""
    if len(a) != len(b) or a == b or Counter(a) != Counter(b):
        return None
    i = 0
    while a[i] == b[i]:
        i += 1
    j = len(a)
    while a[j - 1] == b[j - 1]:
        j -= 1
    return a[i:j], b[i:j]


def swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """b is a with two groups of up to four terms exchanged around a middle that is not just "and"/"or".

    An empty middle is a block moved, not an exchange ("in Python, how do I..." / "how do I ... in Python").
    """
    span = rearranged(a, b)
    if span is None:
        return False
    ra, rb = span
    n = len(ra)
    for lx in range(1, min(n - 1, 5)):
        for ly in range(1, min(n - lx, 5)):
            x, middle, y = ra[:lx], ra[lx : n - ly], ra[n - ly :]
            if rb == y + middle + x:
                # "a fruit or a vegetable" / "a vegetable or a fruit" asks the same thing.
                return not (set(middle) & SYMMETRIC and set(middle) <= SYMMETRIC | DETERMINERS)
    return False


# ---- negations


def _negator(low: str) -> bool:
    return low in NEGATIONS or low.endswith(("n't", "n'"))


def _negations(tokens: list[Token]) -> Counter[str]:
    """Each negation with what it applies to: the next content word ("not signing" -> "signing").

    A multiset, not a yes/no flag: "for signing a non-compete" / "for not signing a non-compete" both contain a
    negation, yet only one negates the signing. A word negated by its own prefix ("non-compete", "non-GMO")
    negates itself, so a "non-compete" on both sides cancels out and a "not" on one side still counts.
    """
    found: Counter[str] = Counter()
    for i, t in enumerate(tokens):
        if t.kind != "word":
            continue
        low = t.low
        if "-" in low and not _negator(low):
            head, _, rest = low.partition("-")
            if head in NEGATIONS and rest:
                found[stem(rest)] += 1
            continue
        if not _negator(low):
            continue
        scope = ""
        for nxt in tokens[i + 1 : i + 6]:
            if nxt.kind == "punct":
                break
            if nxt.kind in ("word", "num") and nxt.low not in FUNCTION_WORDS and not _negator(nxt.low):
                scope = stem(nxt.low)
                break
        found[scope] += 1
    return found


# ---- analysis and the check


def _analyse_text(text: str) -> _Analysis:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(QUOTES)
    tokens = tokenize(text)
    words: set[str] = set()
    keys: list[str] = []
    for t in tokens:
        kind, low = t.kind, t.low
        if kind == "word":
            words.add(low)
        if kind in ("word", "num"):
            keys.append(name_key(t.text))
    entities, phrases = _entities(text, tokens)
    return _Analysis(
        numbers=count_numbers(tokens),
        negations=_negations(tokens),
        words=frozenset(words),
        entities=entities,
        phrases=phrases,
        keys=tuple(keys),
        key_set=frozenset(keys),
        squashed=SQUASH.sub("", text.lower()),
        relations=_relations(tokens),
        tokens=tuple(tokens),
    )


# Stored prompts come back on every hit and near-miss: each is analysed once. Long texts skip the memo, so it
# stays small (at most about 25 MB); the cache sends few of them (it caps the lookup text's length).
_MEMO_ENTRIES = 1024
_MEMO_MAX_CHARS = 1000
_analyse = lru_cache(maxsize=_MEMO_ENTRIES)(_analyse_text)


def _analysis(text: str) -> _Analysis:
    return _analyse(text) if len(text) <= _MEMO_MAX_CHARS else _analyse_text(text)


def _negated_apart(a: _Analysis, b: _Analysis) -> bool:
    """One prompt has more negations, or negates a word the other says without negating it.

    Counts first: "won't start" / "starts" differ, and so do "not signing a non-compete" / "signing a non-compete".
    With as many negations on each side, a negated word the other prompt has un-negated is a moved negation ("my car
    won't start but the lights work" / "my car starts but the lights don't work"); a negation of a reworded word
    ("won't turn on" / "won't power on") is not.
    """
    if a.negations == b.negations:
        return False
    if sum(a.negations.values()) != sum(b.negations.values()):
        return True
    for x, y in ((a, b), (b, a)):
        plain = {stem(w) for w in y.words} - set(y.negations)
        if any(scope in plain for scope in x.negations - y.negations):
            return True
    return False


def _flipped(a: _Analysis, b: _Analysis) -> bool:
    """A word only one prompt has whose opposite only the other has."""
    only_a = {v for w in a.words - b.words for v in (w, stem(w))}
    only_b = {v for w in b.words - a.words for v in (w, stem(w))}
    for w in only_a:
        if OPPOSITE.get(w, frozenset()) & only_b:
            return True
        for prefix in NEGATING_PREFIXES:
            if w.startswith(prefix) and len(w) - len(prefix) >= 4 and w[len(prefix) :] in only_b:
                return True
            if len(w) >= 4 and prefix + w in only_b:
                return True
    return False


def check(new: str, stored: str) -> Verdict:
    """Whether the answer stored for `stored` may be served for `new`; else the first rule that objects."""
    if new == stored:
        return SAFE
    a, b = _analysis(new), _analysis(stored)
    if a.numbers != b.numbers:
        return Verdict(False, NUMBER)
    if _negated_apart(a, b) or _flipped(a, b):
        return Verdict(False, NEGATION)
    if any(not _present(e, b) for e in a.entities) or any(not _present(e, a) for e in b.entities):
        return Verdict(False, ENTITY)
    if any(p not in b.squashed for p in a.phrases) or any(p not in a.squashed for p in b.phrases):
        return Verdict(False, ENTITY)
    if any(_opposed(x, y) for x in a.relations for y in b.relations):
        return Verdict(False, ORDER)
    if len(a.tokens) == len(b.tokens) and swapped(_sequence(a.tokens), _sequence(b.tokens)):
        return Verdict(False, ORDER)
    return SAFE
