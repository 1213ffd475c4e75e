"""The near-miss guard of the semantic cache: is the answer stored for one prompt safe to give to another?

Sentence embeddings score a question and its near-misses as almost the same: with all-MiniLM-L6-v2 "convert USD
to EUR" and "convert EUR to USD" reach 0.994, and an inserted "not" costs about 0.04 (the reversal trap of
GPTCache #694). The similarity threshold keeps unrelated prompts apart (LiteLLM #12234) but cannot separate these,
so after the vector search this guard compares the two prompt texts (the lookup text, usually the last user
message) and rejects the hit, naming the first rule that fired:

* ``number``: the numbers differ. Digits (1,000 / 3.5 / 3,5), number words (five, twenty-one, two hundred, a
  dozen), ordinals (3rd, third), percentages, money, dates, times and versions; a number's unit is part of it, so
  "5 km" and "5 miles" differ while "5 km" and "five kilometres" do not.
* ``negation``: one prompt negates and the other does not (not, no, never, n't, without, except, none, nor,
  neither, cannot, non-...), or a word is swapped for its opposite (enable/disable, on/off, increase/decrease,
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
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import NamedTuple

# The cosine similarity above which the semantic cache considers a stored prompt at all, for all-MiniLM-L6-v2
# with this guard on: the lowest threshold whose false hits stay at or below 1 % on bench/cache_eval/pairs.jsonl.
# bench/cache_eval/curve.md records the curve it was read from; `python -m bench.cache_eval.evaluate` redraws it.
DEFAULT_SIMILARITY_THRESHOLD = 0.81

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

# ---- vocabulary


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_UNITS = {
    **dict.fromkeys(["%", "percent", "pct", "per cent"], "%"),
    **dict.fromkeys(["$", "usd", "dollar", "dollars", "bucks"], "usd"),
    **dict.fromkeys(["€", "eur", "euro", "euros"], "eur"),
    **dict.fromkeys(["£", "gbp", "sterling"], "gbp"),
    **dict.fromkeys(["¥", "jpy", "yen"], "jpy"),
    **dict.fromkeys(["km", "kms", "kilometer", "kilometers", "kilometre", "kilometres"], "km"),
    **dict.fromkeys(["m", "meter", "meters", "metre", "metres"], "m"),
    **dict.fromkeys(["cm", "centimeter", "centimeters", "centimetre", "centimetres"], "cm"),
    **dict.fromkeys(["mm", "millimeter", "millimeters", "millimetre", "millimetres"], "mm"),
    **dict.fromkeys(["mi", "mile", "miles"], "mi"),
    **dict.fromkeys(["ft", "foot", "feet"], "ft"),
    **dict.fromkeys(["inch", "inches"], "in"),
    **dict.fromkeys(["yd", "yard", "yards"], "yd"),
    **dict.fromkeys(["kg", "kgs", "kilo", "kilos", "kilogram", "kilograms"], "kg"),
    **dict.fromkeys(["g", "gram", "grams", "gr"], "g"),
    **dict.fromkeys(["mg", "milligram", "milligrams"], "mg"),
    **dict.fromkeys(["lb", "lbs", "pound", "pounds"], "lb"),
    **dict.fromkeys(["oz", "ounce", "ounces"], "oz"),
    **dict.fromkeys(["l", "liter", "liters", "litre", "litres"], "l"),
    **dict.fromkeys(["ml", "milliliter", "milliliters", "millilitre", "millilitres"], "ml"),
    **dict.fromkeys(["cup", "cups"], "cup"),
    **dict.fromkeys(["tbsp", "tablespoon", "tablespoons"], "tbsp"),
    **dict.fromkeys(["tsp", "teaspoon", "teaspoons"], "tsp"),
    **dict.fromkeys(["gal", "gallon", "gallons"], "gal"),
    **dict.fromkeys(["°c", "celsius", "centigrade"], "°c"),
    **dict.fromkeys(["°f", "fahrenheit"], "°f"),
    **dict.fromkeys(["°", "degree", "degrees", "deg"], "°"),
    **dict.fromkeys(["ms", "millisecond", "milliseconds"], "ms"),
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], "s"),
    **dict.fromkeys(["min", "mins", "minute", "minutes"], "min"),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], "h"),
    **dict.fromkeys(["day", "days"], "day"),
    **dict.fromkeys(["week", "weeks", "wk", "wks"], "week"),
    **dict.fromkeys(["month", "months", "mo"], "month"),
    **dict.fromkeys(["year", "years", "yr", "yrs"], "year"),
    **dict.fromkeys(["decade", "decades"], "decade"),
    **dict.fromkeys(["kb", "kilobyte", "kilobytes"], "kb"),
    **dict.fromkeys(["mb", "megabyte", "megabytes"], "mb"),
    **dict.fromkeys(["gb", "gigabyte", "gigabytes"], "gb"),
    **dict.fromkeys(["tb", "terabyte", "terabytes"], "tb"),
    **dict.fromkeys(["mph"], "mph"),
    **dict.fromkeys(["kph", "kmh", "km/h"], "km/h"),
    **dict.fromkeys(["am", "a.m."], "am"),
    **dict.fromkeys(["pm", "p.m."], "pm"),
    **dict.fromkeys(["st", "nd", "rd", "th"], "th"),
    **dict.fromkeys(["cal", "calorie", "calories", "kcal"], "kcal"),
}
_SMALL = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    # Multiplicative adverbs ask a different question than the bare verb ("reset it twice"); "once" is left
    # out because it mostly means "after" ("once installed, ...").
    "twice": 2,
    "thrice": 3,
}
_MULTIPLIERS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_NUMBER_WORDS = frozenset([*_SMALL, *_MULTIPLIERS, "dozen"])
_ORDINALS = {
    "first": 1,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "twentieth": 20,
    "hundredth": 100,
}
_NEGATIONS = _words(
    """
    not no never none nor neither nobody nothing nowhere without except excluding cannot non
    dont doesnt didnt isnt arent wasnt werent cant wont shouldnt wouldnt couldnt hasnt havent hadnt
    """
)
# Opposites: a prompt that swaps one for the other asks the opposite question. Kept to unambiguous pairs
# ("before"/"after" is an order, handled by the relation rule; "new"/"old" and "in"/"out" are too common).
_OPPOSITES = [
    ("on", "off"),
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("raise", "lower"),
    ("higher", "lower"),
    ("high", "low"),
    ("upgrade", "downgrade"),
    ("add", "remove"),
    ("install", "uninstall"),
    ("encrypt", "decrypt"),
    ("import", "export"),
    ("upload", "download"),
    ("buy", "sell"),
    ("open", "close"),
    ("start", "stop"),
    ("lock", "unlock"),
    ("show", "hide"),
    ("allow", "block"),
    ("allow", "deny"),
    ("accept", "reject"),
    ("include", "exclude"),
    ("maximum", "minimum"),
    ("max", "min"),
    ("maximize", "minimize"),
    ("more", "less"),
    ("most", "least"),
    ("best", "worst"),
    ("hot", "cold"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("cheap", "expensive"),
    ("cheapest", "expensive"),
    ("first", "last"),
    ("left", "right"),
    ("up", "down"),
    ("above", "below"),
    ("inside", "outside"),
    ("win", "lose"),
    ("gain", "lose"),
    ("positive", "negative"),
    ("true", "false"),
    ("legal", "illegal"),
    ("safe", "dangerous"),
    ("possible", "impossible"),
    ("always", "never"),
    ("connect", "disconnect"),
    ("login", "logout"),
    ("incoming", "outgoing"),
    ("inbound", "outbound"),
    ("input", "output"),
    ("credit", "debit"),
    ("deposit", "withdraw"),
    ("borrow", "lend"),
    ("ascending", "descending"),
    ("north", "south"),
    ("east", "west"),
    ("advantage", "disadvantage"),
    ("pro", "con"),
    ("benefit", "risk"),
    ("benefit", "drawback"),
    ("agree", "disagree"),
    ("like", "dislike"),
    ("push", "pull"),
    ("send", "receive"),
    ("full", "empty"),
    ("wet", "dry"),
    ("overweight", "underweight"),
    ("overpaid", "underpaid"),
]
_OPPOSITE: dict[str, frozenset[str]] = {}
for _a, _b in _OPPOSITES:
    _OPPOSITE[_a] = _OPPOSITE.get(_a, frozenset()) | {_b}
    _OPPOSITE[_b] = _OPPOSITE.get(_b, frozenset()) | {_a}
# "pair" / "unpair", "advantage" / "disadvantage", "activate" / "deactivate": an opposite made by a prefix.
_NEGATING_PREFIXES = ("un", "dis", "de", "non")

_FUNCTION_WORDS = _words(
    """
    a an the this that these those my your our their his her its me you we they he she it i us them
    what which who whom whose when where why how whats whos hows
    is are was were be been being am do does did done doing have has had having can could should would will
    shall may might must
    and or but if then so than as of at by for with about against between into through during before after
    above below to from up down in out on off over under again further once here there all any both each few
    more most other some such only own same too very just also there's it's i'm i've i'd i'll
    """
)
# Words that start a prompt without naming anything: capitalised only because they come first.
_SENTENCE_OPENERS = _FUNCTION_WORDS | _words(
    """
    hi hello hey dear thanks thank sorry ok okay yes no also now so well actually quick question urgent note
    please can could would should will did was were has have had let lets let's whats what's how's where's who's
    is there isn't aren't don't doesn't can't won't didn't shouldn't not never my our your im i'm
    as in on at for from to by with after before during while when if since because although though
    one some many much every each all most few several other another such none neither either any anyone
    best good top tip tips ways steps ideas examples recipe difference meaning definition benefits pros cons
    guide tutorial overview summary instructions
    explain describe tell give show list write create make find help convert translate summarize summarise
    compare calculate recommend suggest generate plan book check get set use need want name define outline
    draft rewrite rephrase paraphrase improve analyze analyse identify provide share draw design build
    implement refactor optimize optimise review proofread correct edit format schedule remind search look
    teach walk guide brainstorm estimate predict classify extract parse count solve prove simplify evaluate
    enumerate answer reply assume imagine pretend act continue complete finish produce compose transform
    replace rename move copy insert configure deploy execute test verify validate contrast clarify elaborate
    discuss justify critique rate rank advise assist support organize organise prepare compute determine
    reset change update delete remove add install uninstall enable disable turn open close start stop run
    send email call buy sell pay cancel return order track fix debug sort reverse merge read
    """
)
# Names often typed in lowercase (not those that are also common words: react, excel, rust, swift, chrome).
_LOWERCASE_NAMES = _words(
    """
    python javascript typescript java kotlin golang ruby php perl scala haskell sql mysql postgresql postgres
    sqlite mongodb redis docker kubernetes linux ubuntu debian fedora macos android ios firefox git github npm
    pip pandas numpy vue django nginx
    usd eur gbp jpy chf cad aud cny inr
    monday tuesday wednesday thursday friday saturday sunday
    january february april june july august september october november december
    """
)
# Capitalised or all-caps words that name nothing.
_NOT_NAMES = frozenset(["i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "asap", "fyi", "faq", "pls", "tl;dr"])
_DETERMINERS = _words("a an the my your our their his her its this that these those some")
_SYMMETRIC = frozenset(["and", "or", "&", "and/or", ","])

# ---- tokens

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2044": "/", "\u00a0": " "})
_TOKEN = re.compile(
    r"""
    (?P<url>https?://\S+|www\.\S+|(?<![\w.])(?:~|\.{1,2})?/[\w.~-]+(?:/[\w.~-]+)+|\b[A-Za-z]:\\[\w\\. -]+)
    |(?P<num>(?:(?<![^\s(])-)?\d+(?:[.,]\d+)*(?:[:/-]\d+)*(?:[.]\d+)*)(?P<suffix>[A-Za-z]+)?
    |(?P<word>[^\W\d_][\w]*(?:['.-][\w]+)*[+#]*)
    |(?P<sym>[$€£¥%°#&]|->|=>|→)
    |(?P<punct>[.!?;:\n]|,)
    """,
    re.VERBOSE,
)
_QUOTED = re.compile(r"""(?<!\w)(?:"([^"\n]{1,80})"|'([^'\n]{1,80})'(?!\w)|`([^`\n]{1,80})`)""")
_CAMEL = re.compile(r"[a-z][A-Z]|[A-Z]{2,}|\d")
_SQUASH = re.compile(r"[\W_]+")


class _Token(NamedTuple):
    kind: str  # "url", "num", "word", "sym", "punct"
    text: str  # as written (quotes normalised)
    low: str
    start_of_sentence: bool
    suffix: str = ""


@dataclass(frozen=True, slots=True)
class _Analysis:
    numbers: Counter[tuple[str, str]]
    negated: bool
    words: frozenset[str]
    entities: frozenset[str]  # keys (see _key)
    phrases: frozenset[str]  # squashed quoted strings, URLs, paths
    keys: tuple[str, ...]  # every word's and number's key, in order, for presence tests
    key_set: frozenset[str]
    squashed: str  # lowercase letters and digits only, for quoted strings and URLs
    relations: tuple[tuple[frozenset[str], frozenset[str]], ...]
    tokens: tuple[_Token, ...]


@lru_cache(maxsize=16384)
def _key(word: str) -> str:
    """Case, hyphens, dots and possessive 's do not make two names different."""
    word = word.lower()
    if word.endswith("'s"):
        word = word[:-2]
    return word.replace("-", "").replace(".", "").replace("'", "")


@lru_cache(maxsize=16384)
def _stem(word: str) -> str:
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    return "a" if word == "an" else word


def _term(t: _Token) -> str:
    """A token as a term of a relation or word sequence: singular, unless an acronym (HTTPS is not HTTP)."""
    return t.low if t.text.isupper() and len(t.text) > 1 else _stem(t.low)


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    append = out.append
    sentence_start = True
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "punct":
            raw = m.group()
            append(_Token("punct", raw, raw, False))
            sentence_start = raw != ","
            continue
        if kind == "suffix":
            append(_Token("num", m.group("num"), m.group("num"), sentence_start, m.group("suffix").lower()))
        elif kind == "word":
            raw = m.group()
            low = raw.lower()
            if "-" in low and low.split("-", 1)[0] in _NUMBER_WORDS:
                # "twenty-one", "ten-year-old", "one-week": the number words and the unit are separate terms.
                for j, part in enumerate(raw.split("-")):
                    append(_Token("word", part, part.lower(), sentence_start and j == 0))
            else:
                append(_Token("word", raw, low, sentence_start))
        else:
            raw = m.group()
            append(_Token(kind or "", raw, raw.lower(), sentence_start))
        sentence_start = False
    return out


# ---- numbers


def _decimal(digits: str) -> Decimal | str:
    """1,000 -> 1000; 3,5 -> 3.5; -2 -> -2; 3.10, 3.11.2, 5/3/2024, 10:30 stay as written (versions, dates)."""
    sign = "-" if digits.startswith("-") else ""
    digits = digits.removeprefix("-")
    if any(c in digits for c in ":/-") or digits.count(".") > 1 or ("." in digits and digits.endswith("0")):
        return sign + digits
    if "," in digits:
        head, *groups = digits.split(",")
        if all(len(g) == 3 for g in groups) and "." not in head:
            digits = head + "".join(groups)
        elif len(groups) == 1 and "." not in digits:
            digits = f"{head}.{groups[0]}"
        else:
            digits = digits.replace(",", "")
    try:
        return Decimal(sign + digits)
    except InvalidOperation:
        return sign + digits


def _canonical(value: Decimal | str) -> str:
    if isinstance(value, str):
        return value
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _unit_after(tokens: list[_Token], i: int) -> tuple[str, int]:
    """The unit written after the number ending at token i-1, and how many tokens it takes."""
    if i >= len(tokens):
        return "", 0
    t = tokens[i]
    if t.kind == "sym" and t.low in ("$", "€", "£", "¥"):
        return _UNITS[t.low], 1
    if t.kind == "sym" and t.low in ("%", "°"):
        nxt = tokens[i + 1].low if i + 1 < len(tokens) else ""
        if t.low == "°" and nxt in ("c", "f", "celsius", "fahrenheit"):
            return "°" + nxt[0], 2
        return _UNITS[t.low], 1
    if t.kind != "word":
        return "", 0
    if t.low in ("degree", "degrees", "deg") and i + 1 < len(tokens):
        nxt = tokens[i + 1].low
        if nxt in ("celsius", "c", "centigrade"):
            return "°c", 2
        if nxt in ("fahrenheit", "f"):
            return "°f", 2
    if t.low == "per" and i + 1 < len(tokens) and tokens[i + 1].low == "cent":
        return "%", 2
    for part in (t.low, t.low.split("-")[0]):
        if part in _UNITS:
            return _UNITS[part], 1
    return "", 0


def _numbers(tokens: list[_Token]) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    i = 0
    while i < len(tokens):
        t = tokens[i]
        value: Decimal | str | None = None
        unit = ""
        start = i
        if t.kind == "num":
            value = _decimal(t.text)
            unit = _UNITS.get(t.suffix, t.suffix)
            if unit == "k" and isinstance(value, Decimal):  # 10k = 10,000
                value, unit = value * 1000, ""
            i += 1
        elif t.kind == "word" and t.low in _NUMBER_WORDS:
            i = _word_number_end(tokens, i)
            words = [w.low for w in tokens[start:i] if w.low in _NUMBER_WORDS]
            value = _word_value(words)
            # "one" alone is as often a pronoun ("which one") as a count: it counts only with a unit or multiplier.
            if words == ["one"] and not _unit_after(tokens, i)[1]:
                value = None
        elif t.kind == "word" and (t.low in _ORDINALS or (t.low == "second" and i and tokens[i - 1].low == "the")):
            value, unit = Decimal(_ORDINALS.get(t.low, 2)), "th"
            i += 1
        else:
            i += 1
            continue
        if value is None:
            continue
        if isinstance(value, Decimal) and i < len(tokens) and tokens[i].low in _MULTIPLIERS:
            value *= _MULTIPLIERS[tokens[i].low]
            i += 1
        if not unit:
            unit, used_tokens = _unit_after(tokens, i)
            i += used_tokens
        if not unit and start > 0:
            before = tokens[start - 1]
            if before.low in ("$", "€", "£", "¥") or (before.kind == "word" and before.low in ("usd", "eur", "gbp")):
                unit = _UNITS[before.low]
        found[_canonical(value), unit] += 1
    return found


def _word_value(words: list[str]) -> Decimal:
    """The value of number words: "twenty one", "two hundred fifty", "a dozen", "three thousand"."""
    total = current = 0
    for w in words:
        if w in _SMALL:
            current += _SMALL[w]
        elif w == "dozen":
            current = max(current, 1) * 12
        elif w == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * _MULTIPLIERS[w]
            current = 0
    return Decimal(total + current)


def _word_number_end(tokens: list[_Token], i: int) -> int:
    """Index after a run of number words (hyphenated or joined by "and")."""
    j = i
    while j < len(tokens):
        t = tokens[j]
        number = t.kind == "word" and t.low in _NUMBER_WORDS
        joins = t.low == "and" and j > i and j + 1 < len(tokens) and tokens[j + 1].low in _SMALL
        if not (number or joins):
            break
        j += 1
    return j


# ---- entities


def _case_modes(tokens: list[_Token]) -> tuple[bool, bool]:
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


def _entities(text: str, tokens: list[_Token]) -> tuple[frozenset[str], frozenset[str]]:
    names: set[str] = set()
    phrases = (
        {_SQUASH.sub("", "".join(g for g in m.groups() if g).lower()) for m in _QUOTED.finditer(text)}
        if any(q in text for q in "\"'`")
        else set()
    )
    shouting, title = _case_modes(tokens)
    for t in tokens:
        if t.kind == "url":
            phrases.add(_SQUASH.sub("", t.low))
            continue
        if t.kind != "word":
            continue
        w, low = t.text, t.low
        if w == low and w.isalpha():
            # The common case, a plain lowercase word: only the list of lowercase names applies.
            if low in _LOWERCASE_NAMES:
                names.add(low)
            continue
        if low in _NOT_NAMES:
            continue
        # snake_case, dotted.names (not abbreviations like e.g.), C#, C++
        code = "_" in w or w.endswith(("#", "++")) or ("." in w and any(len(p) > 1 for p in w.split(".")))
        mixed = bool(_CAMEL.search(w)) and not shouting
        capital = (
            w[0].isupper() and not shouting and not title and not (t.start_of_sentence and low in _SENTENCE_OPENERS)
        )
        if code or mixed or capital or low in _LOWERCASE_NAMES:
            names.add(_key(w))
    phrases.discard("")
    return frozenset(names), frozenset(phrases)


def _present(name: str, other: _Analysis) -> bool:
    keys = other.key_set
    if name in keys or _stem(name) in keys or name + "s" in keys:
        return True
    # Written as two words in the other prompt: "WiFi" / "Wi Fi".
    return any(x + y == name for x, y in itertools.pairwise(other.keys))


# ---- relations


def _span(tokens: list[_Token], i: int, step: int) -> frozenset[str]:
    """Up to three content words next to a marker (step -1: before it, +1: after it), skipping determiners after."""
    words: list[str] = []
    j = i + step
    if step > 0:
        while j < len(tokens) and tokens[j].low in _DETERMINERS:
            j += 1
    while 0 <= j < len(tokens) and len(words) < 3:
        t = tokens[j]
        if t.kind not in ("word", "num") or t.low in _FUNCTION_WORDS:
            break
        words.append(_term(t))
        j += step
    return frozenset(words)


def _relations(tokens: list[_Token]) -> tuple[tuple[frozenset[str], frozenset[str]], ...]:
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


def _sequence(tokens: tuple[_Token, ...]) -> tuple[str, ...]:
    return tuple(_term(t) for t in tokens if t.kind in ("word", "num", "sym") or t.low == ",")


def _swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """b is a with two groups of up to four terms exchanged around a middle that is not just "and"/"or".

    An empty middle is a block moved, not an exchange ("in Python, how do I..." / "how do I ... in Python").
    """
    if len(a) != len(b) or a == b or Counter(a) != Counter(b):
        return False
    i = 0
    while a[i] == b[i]:
        i += 1
    j = len(a)
    while a[j - 1] == b[j - 1]:
        j -= 1
    ra, rb = a[i:j], b[i:j]
    n = len(ra)
    for lx in range(1, min(n - 1, 5)):
        for ly in range(1, min(n - lx, 5)):
            x, middle, y = ra[:lx], ra[lx : n - ly], ra[n - ly :]
            if rb == y + middle + x:
                # "a fruit or a vegetable" / "a vegetable or a fruit" asks the same thing.
                return not (set(middle) & _SYMMETRIC and set(middle) <= _SYMMETRIC | _DETERMINERS)
    return False


# ---- analysis and the check


def _analyse_text(text: str) -> _Analysis:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    tokens = _tokens(text)
    words: set[str] = set()
    keys: list[str] = []
    negated = False
    for t in tokens:
        kind, low = t.kind, t.low
        if kind == "word":
            words.add(low)
            if not negated:
                negated = (
                    low in _NEGATIONS
                    or low.endswith(("n't", "n'"))
                    or ("-" in low and any(p in _NEGATIONS for p in low.split("-")))
                )
        if kind in ("word", "num"):
            keys.append(_key(t.text))
    entities, phrases = _entities(text, tokens)
    return _Analysis(
        numbers=_numbers(tokens),
        negated=negated,
        words=frozenset(words),
        entities=entities,
        phrases=phrases,
        keys=tuple(keys),
        key_set=frozenset(keys),
        squashed=_SQUASH.sub("", text.lower()),
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


def _flipped(a: _Analysis, b: _Analysis) -> bool:
    """A word only one prompt has whose opposite only the other has."""
    only_a = {v for w in a.words - b.words for v in (w, _stem(w))}
    only_b = {v for w in b.words - a.words for v in (w, _stem(w))}
    for w in only_a:
        if _OPPOSITE.get(w, frozenset()) & only_b:
            return True
        for prefix in _NEGATING_PREFIXES:
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
    if a.negated != b.negated or _flipped(a, b):
        return Verdict(False, NEGATION)
    if any(not _present(e, b) for e in a.entities) or any(not _present(e, a) for e in b.entities):
        return Verdict(False, ENTITY)
    if any(p not in b.squashed for p in a.phrases) or any(p not in a.squashed for p in b.phrases):
        return Verdict(False, ENTITY)
    if any(_opposed(x, y) for x in a.relations for y in b.relations):
        return Verdict(False, ORDER)
    if len(a.tokens) == len(b.tokens) and _swapped(_sequence(a.tokens), _sequence(b.tokens)):
        return Verdict(False, ORDER)
    return SAFE
