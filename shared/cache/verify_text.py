"""The verification's reading of a prompt: its words in order, lightly stemmed, synonyms folded, and which are content.

Shared by the rules of `shared.cache.verify` and the proof of `shared.cache.proof`; no model, no I/O, memoised.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that carry no content of their own: articles, pronouns, auxiliaries, the framing of a question ("what's
# the best way to", "can someone explain"), politeness, and the prepositions that do not locate anything (in/on/at
# are interchangeable in prompts). Negations are here too: the guard compares them. Spatial words are not here:
# "behind the knee" and "under the knee" are different places.
FUNCTION = words(
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
PHRASES = (
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
SYNONYM_GROUPS = (
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
NUMBER_WORDS = words(
    """
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million
    billion dozen half twice
    """
)
_SPELLING = ((re.compile(r"our$"), "or"), (re.compile(r"ise$"), "ize"), (re.compile(r"tre$"), "ter"))
TOKEN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*|\d[\d.,:/]*")


def _build_synonyms() -> dict[str, str]:
    table: dict[str, str] = {}
    for group in SYNONYM_GROUPS:
        words = group.split()
        head = stem(words[0])
        for w in words:
            table[stem(w)] = head
    return table


@lru_cache(maxsize=8192)
def stem(word: str) -> str:
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


SYNONYM: dict[str, str] = _build_synonyms()

FUNCTION_STEMS = frozenset(stem(w) for w in FUNCTION) | FUNCTION
PHRASE_RES = tuple((re.compile(rf"\b{re.escape(p)}\b"), r) for p, r in PHRASES)


def content_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    for pattern, repl in PHRASE_RES:
        if pattern.search(text):
            text = pattern.sub(repl, text)
    return text


# Removed before aligning: articles, possessives and politeness change no question ("my laptop" / "the laptop").
DROP = words(
    """
    a an the my your our their his her its this that these those some
    please pls plz thanks thank hi hello hey just really actually exactly basically simply question ok okay
    so also even still very quite
    """
)


@lru_cache(maxsize=4096)
def tokens(text: str) -> tuple[tuple[str, ...], frozenset[int]]:
    """The prompt's words in order (stemmed, synonyms folded, fillers dropped), and which of them are content."""
    found: list[str] = []
    content: set[int] = set()
    for raw in TOKEN.findall(content_text(text)):
        word = raw.replace("-", "")
        if word in DROP or raw[0].isdigit() or word in NUMBER_WORDS:
            continue  # numbers are the guard's: it compares their values, whatever the words
        stemmed = stem(word)
        if word in FUNCTION or stemmed in FUNCTION_STEMS:
            found.append(stemmed)
            continue
        content.add(len(found))
        found.append(SYNONYM.get(stemmed, stemmed))
    return tuple(found), frozenset(content)
