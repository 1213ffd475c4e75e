"""The proof a semantic-cache candidate must give before it is served: the two prompts say the same things.

Three rounds of held-out pairs showed that rules which look for a known kind of difference (a swapped word, an
opposite, a part, a reversal) let a rewording through whenever its difference was of a kind nobody listed: 18 of
307 fresh near misses in the third round. So the default is the other way round: a candidate is served only when
the check can show that nothing differs. Every term of each prompt must be matched by a term of the other:

* content words, lightly stemmed, by the same word, a synonym the verification folds (`shared.cache.verify_text`),
  or a WordNet synonym in the first (most frequent) sense of both words (`shared.cache.lexicon`);
* the words that change a question without being content, which the other rules drop: the question word (how,
  what, why, when, where, who; "what's the best way to" and "how can I" are one "how"), the modality (can, should,
  must, may), the past tense, the relation words (from, into, than, within, during, between), the quantifiers
  (all, most, only, both, either) and the count of negations.

A term left unmatched on either side is a different question as far as this check can tell: the candidate is
UNPROVEN, a miss, unless a judge deployment is configured and says the two are the same. The guard and the rules of
`shared.cache.verify` still run (a reversal keeps all its words). Deterministic, no I/O; memoised per text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from shared.cache import lexicon
from shared.cache.verify_text import (
    DROP,
    FUNCTION,
    FUNCTION_STEMS,
    NUMBER_WORDS,
    SYNONYM,
    TOKEN,
    content_text,
    stem,
    words,
)

# A WordNet synonym counts only in the first (most frequent) sense of both words: "dog" shares a synset with "frump"
# (its second sense) and "buy" with "bribe" (its third); "car" and "automobile", "fix" and "repair" share their first.
SENSES = 1

# Question frames that ask how to do something, folded to "how" before the words are read.
_FRAMES = tuple(
    (re.compile(pattern), "how")
    for pattern in (
        r"\bhow to\b",
        r"\bwhat(?:'s| is| are|s|re)? (?:the |some |a |an )?(?:best |easiest |simplest |quickest |fastest |right "
        r"|proper |correct |good |recommended |quick |fast )?(?:way|ways|method|methods|steps|procedure|process"
        r"|syntax|command|code|shortcut|secret|trick|tricks|key) (?:to|of|for)\b",
        r"\bis there (?:a|an|any) (?:way|method) (?:to|of|for)\b",
        r"\b(?:ways|tips|steps) (?:to|for|on)\b",
    )
) + tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        # The one asking, however said: "how do you boil an egg" is "how do I"; the pronoun stays for the roles.
        (r"\bhow (?:do|does|can|could|should|would|will|might|may|shall) (?:i|you|we|one|someone|people|u)\b", "how i"),
        (
            r"\b(?:can|could|would|will) (?:you|u|someone|anyone) (?:please )?(?:tell|show|explain|help)(?: to)?"
            r"(?: me| us)?\b",
            "",
        ),
        (r"\b(?:i want to|i'd like to|i would like to|i need to|i wanna) (?:know|understand|find out|learn)\b", ""),
        (r"\b(?:i wonder|i was wondering|do you know|does anyone know|any idea|quick question)\b", ""),
        (r"\bis it (?:possible|ok|okay|fine|alright) (?:to|for me to)\b", "can i"),
        (r"\bwhat (?:should|do|can) (?:i|we) do\b", "what"),
    )
)
# Words the other rules treat as function words but that change the question, each to its class.
_MARKERS: dict[str, str] = {
    **dict.fromkeys(("who", "whom", "whose"), "who"),
    **dict.fromkeys(("what", "which", "whats", "whatre"), "what"),
    **dict.fromkeys(("how", "hows"), "how"),
    "when": "when",
    "where": "where",
    "why": "why",
    **dict.fromkeys(("can", "could"), "can"),
    **dict.fromkeys(("should", "ought"), "should"),
    "must": "must",
    **dict.fromkeys(("may", "might"), "may"),
    **dict.fromkeys(("did", "was", "were", "had"), "past"),
    "from": "from",
    "within": "within",
    "during": "during",
    "between": "between",
    **dict.fromkeys(("all", "every", "each"), "all"),
    "most": "most",
    "only": "only",
    **dict.fromkeys(("either", "neither"), "either"),
    **dict.fromkeys(("other", "another", "else"), "other"),
    "same": "same",
    "or": "or",
}
# Who does what to whom: the persons in the order they are named, repeats collapsed ("should I text him" / "should he
# text me"; "do I like him" / "does he like me").
_PERSONS: dict[str, str] = {
    **dict.fromkeys(("i", "me", "my", "mine", "myself"), "1"),
    **dict.fromkeys(("we", "us", "our", "ours", "ourselves"), "1p"),
    **dict.fromkeys(("you", "your", "yours", "yourself", "u", "ur"), "2"),
    **dict.fromkeys(("he", "him", "his", "himself"), "3m"),
    **dict.fromkeys(("she", "her", "hers", "herself"), "3f"),
    **dict.fromkeys(("they", "them", "their", "theirs", "themselves"), "3p"),
}
# The pronouns that take a role (subject or object; possessives do not), and the words skipped to find what the role
# is: "should I tip my waiter" has I -> tip, "should my waiter tip me" has me -> (end).
_SUBJECTS = frozenset({"i", "we", "you", "u", "he", "she", "they"})
_OBJECTS = frozenset({"me", "us", "him", "her", "them"})
_AUXILIARIES = words(
    """
    do does did don doesn didn am is are was were be been being isn aren wasn weren have has had haven hasn hadn
    can could should would will shall may might must cannot couldn shouldn wouldn won t m s re ve ll d not
    """
)
# Words that order two things; the things on either side must stay there (`_same_pivots`).
_PIVOTS = words("after before until till since instead rather than vs versus unlike")
# Prepositions whose object must stay theirs (`_same_relations`).
_RELATIONS = words("to from for into onto with against toward towards by about of on in at over under through")
# Function words to the other rules, content here: a verb of wanting or liking changes what is asked.
_CONTENT_HERE = frozenset(
    {"like", "likes", "liked", "need", "needs", "want", "wants", "help", "helps", "try", "go", "than", "rather", "vs"}
)
_NEGATION = re.compile(r"\b(?:not|no|never|nor|none|neither|nobody|nothing|nowhere|without|cannot)\b|n't\b")
UNPROVEN = "unproven"


@dataclass(frozen=True, slots=True)
class Terms:
    content: tuple[tuple[str, str], ...]  # (folded stem, the word as written) in order
    markers: frozenset[str]
    negations: int
    persons: tuple[str, ...]
    # (person, "subject" or "object", the folded word that follows the pronoun, or "" at the end)
    roles: tuple[tuple[str, str, str], ...]
    pivots: tuple[tuple[str, str, str], ...]  # (the content word before, the pivot, the content word after)
    relations: tuple[tuple[str, str], ...]  # (a preposition, the content word after it, or "" at the end)


@lru_cache(maxsize=4096)
def terms(text: str) -> Terms:
    lowered = content_text(text)
    for pattern, repl in _FRAMES:
        lowered = pattern.sub(repl, lowered)
    content: list[tuple[str, str]] = []
    markers: set[str] = set()
    persons: list[str] = []
    roles: list[tuple[str, str, str]] = []
    relations: list[tuple[str, str]] = []
    pending: list[str] = []  # prepositions waiting for the content word they govern
    raws = TOKEN.findall(lowered)
    following = _following(raws)
    for at, raw in enumerate(raws):
        word = raw.replace("-", "")
        if word in _RELATIONS:
            pending.append(word)
        if word in _SUBJECTS or word in _OBJECTS:
            case = "subject" if word in _SUBJECTS else "object"
            roles.append((_PERSONS[word], case, following[at]))
        if word in _MARKERS:
            markers.add(_MARKERS[word])
            continue
        if word in _PERSONS:
            if not persons or persons[-1] != _PERSONS[word]:
                persons.append(_PERSONS[word])
            continue
        if raw[0].isdigit() or word in NUMBER_WORDS:
            continue  # numbers are the guard's: it compares their values
        stemmed = stem(word)
        if word not in _CONTENT_HERE and (word in DROP or word in FUNCTION or stemmed in FUNCTION_STEMS):
            continue
        content.append((SYNONYM.get(stemmed, stemmed), word))
        relations.extend((prep, content[-1][0]) for prep in pending)
        pending.clear()
    relations.extend((prep, "") for prep in pending)
    negations = len(_NEGATION.findall(lowered))
    pivots = tuple(
        (content[i - 1][0] if i > 0 else "", key, content[i + 1][0] if i + 1 < len(content) else "")
        for i, (key, _) in enumerate(content)
        if key in _PIVOTS
    )
    return Terms(
        tuple(content),
        frozenset(markers),
        negations,
        tuple(persons),
        tuple(sorted(roles)),
        pivots,
        tuple(sorted(set(relations))),
    )


def _following(raws: list[str]) -> list[str]:
    """For each position, the folded word the nearest significant word after it makes ("" at the end): one pass
    from the end, so a prompt of many pronouns costs no more than any other."""
    out = [""] * len(raws)
    nearest = ""
    for at in range(len(raws) - 1, -1, -1):
        out[at] = nearest
        word = raws[at].replace("-", "")
        skipped = word in _AUXILIARIES or word in DROP or word in _MARKERS or word in _PERSONS
        if not skipped and (word in _CONTENT_HERE or not (word in FUNCTION or stem(word) in FUNCTION_STEMS)):
            stemmed = stem(word)
            nearest = SYNONYM.get(stemmed, stemmed)
    return out


# A prompt without a question word ("explain closures in JavaScript") asks what or how; never why, when, where, who.
_OPEN = frozenset({"what", "how"})
_QUESTION = frozenset({"what", "how", "why", "when", "where", "who"})


def _same_markers(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return True
    if a - _QUESTION != b - _QUESTION:
        return False
    qa, qb = a & _QUESTION, b & _QUESTION
    return (not qa and len(qb) == 1 and qb <= _OPEN) or (not qb and len(qa) == 1 and qa <= _OPEN)


def _interchangeable(a: str, b: str) -> bool:
    """The same word once lemmatised, or WordNet synonyms, in the same degree ("small" / "smaller" are not)."""
    return _degree(a) == _degree(b) and lexicon.synonyms(a, b, senses=SENSES)


def _degree(word: str) -> str:
    """ "er" or "est" for a comparative or superlative WordNet knows as one (bigger, largest), else ""."""
    for suffix in ("est", "er"):
        if word.endswith(suffix) and any(pos in "ar" and lemma != word for lemma, pos in lexicon.lemmas(word)):
            return suffix
    return ""


def _same_roles(a: tuple[tuple[str, str, str], ...], b: tuple[tuple[str, str, str], ...]) -> bool:
    """The same persons as subjects and as objects, and each subject followed by a word in common on both sides."""
    if {(p, case) for p, case, _ in a} != {(p, case) for p, case, _ in b}:
        return False
    for person in {p for p, case, _ in a if case == "subject"}:
        after_a = {w for p, case, w in a if p == person and case == "subject"}
        after_b = {w for p, case, w in b if p == person and case == "subject"}
        if after_a.isdisjoint(after_b):
            return False
    return True


def proven(new: str, stored: str) -> bool:
    """Every term of each prompt is matched by one of the other (see the module's docstring)."""
    a, b = terms(new), terms(stored)
    # A prompt that names no person ("how to clean an oven") is impersonal: it matches one that says "my oven".
    persons_differ = a.persons and b.persons and a.persons != b.persons
    roles_differ = a.roles and b.roles and not _same_roles(a.roles, b.roles)
    if a.negations != b.negations or persons_differ or roles_differ or not _same_markers(a.markers, b.markers):
        return False
    keys_a = {key for key, _ in a.content}
    keys_b = {key for key, _ in b.content}
    left = {key: word for key, word in a.content if key not in keys_b}
    right = {key: word for key, word in b.content if key not in keys_a}
    # Each remaining word must pair with a distinct one of the other side that is the same word once lemmatised or a
    # WordNet synonym (few words: a greedy match is enough, and it errs towards unproven).
    same_as: dict[str, str] = {}
    for key, word in left.items():
        partner = next((k for k, w in right.items() if _interchangeable(word, w)), None)
        if partner is None:
            return False
        same_as[partner] = key
        del right[partner]
    if right:
        return False
    if not _same_relations(a.relations, tuple((p, same_as.get(x, x)) for p, x in b.relations)):
        return False
    return _same_pivots(a.pivots, tuple((same_as.get(x, x), p, same_as.get(y, y)) for x, p, y in b.pivots))


def _same_relations(a: tuple[tuple[str, str], ...], b: tuple[tuple[str, str], ...]) -> bool:
    """A preposition both prompts use governs a word in common on both sides ("food meant for dogs" / "food meant
    for cats" is caught by the unmatched word; "a charger for my phone from my laptop" / "a charger for my laptop from
    my phone" keeps its words and swaps what each preposition governs)."""
    for prep in {p for p, _ in a} & {p for p, _ in b}:
        if {x for p, x in a if p == prep}.isdisjoint({x for p, x in b if p == prep}):
            return False
    return True


def _same_pivots(a: tuple[tuple[str, str, str], ...], b: tuple[tuple[str, str, str], ...]) -> bool:
    """Around each word that orders two things (after, before, than, instead of), the same things on each side.

    "Coffee after waking up" / "waking up after coffee" keep all their words; which side of "after" they stand on is
    the question. A block moved elsewhere ("after the update my screen flickers" / "my screen flickers after the
    update") keeps its neighbours.
    """
    return sorted(a) == sorted(b)
