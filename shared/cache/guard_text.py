"""The near-miss guard's reading of a prompt: tokens (words, numbers with their units, URLs, symbols) and the
numbers they state, in a canonical form, so "5 km" and "five kilometres" compare equal and "5 km" and "5 miles" do not.
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import NamedTuple

from shared.cache.guard_words import MULTIPLIERS, NUMBER_WORDS, ORDINALS, SMALL, UNITS

QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2044": "/", "\u00a0": " "})
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
QUOTED = re.compile(r"""(?<!\w)(?:"([^"\n]{1,80})"|'([^'\n]{1,80})'(?!\w)|`([^`\n]{1,80})`)""")
CAMEL = re.compile(r"[a-z][A-Z]|[A-Z]{2,}|\d")
SQUASH = re.compile(r"[\W_]+")


class Token(NamedTuple):
    kind: str  # "url", "num", "word", "sym", "punct"
    text: str  # as written (quotes normalised)
    low: str
    start_of_sentence: bool
    suffix: str = ""


@lru_cache(maxsize=16384)
def name_key(word: str) -> str:
    """Case, hyphens, dots and possessive 's do not make two names different."""
    word = word.lower()
    if word.endswith("'s"):
        word = word[:-2]
    return word.replace("-", "").replace(".", "").replace("'", "")


@lru_cache(maxsize=16384)
def stem(word: str) -> str:
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    return "a" if word == "an" else word


def term_of(t: Token) -> str:
    """A token as a term of a relation or word sequence: singular, unless an acronym (HTTPS is not HTTP)."""
    return t.low if t.text.isupper() and len(t.text) > 1 else stem(t.low)


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    append = out.append
    sentence_start = True
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "punct":
            raw = m.group()
            append(Token("punct", raw, raw, False))
            sentence_start = raw != ","
            continue
        if kind == "suffix":
            append(Token("num", m.group("num"), m.group("num"), sentence_start, m.group("suffix").lower()))
        elif kind == "word":
            raw = m.group()
            low = raw.lower()
            if "-" in low and low.split("-", 1)[0] in NUMBER_WORDS:
                # "twenty-one", "ten-year-old", "one-week": the number words and the unit are separate terms.
                for j, part in enumerate(raw.split("-")):
                    append(Token("word", part, part.lower(), sentence_start and j == 0))
            else:
                append(Token("word", raw, low, sentence_start))
        else:
            raw = m.group()
            append(Token(kind or "", raw, raw.lower(), sentence_start))
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


def _unit_after(tokens: list[Token], i: int) -> tuple[str, int]:
    """The unit written after the number ending at token i-1, and how many tokens it takes."""
    if i >= len(tokens):
        return "", 0
    t = tokens[i]
    if t.kind == "sym" and t.low in ("$", "€", "£", "¥"):
        return UNITS[t.low], 1
    if t.kind == "sym" and t.low in ("%", "°"):
        nxt = tokens[i + 1].low if i + 1 < len(tokens) else ""
        if t.low == "°" and nxt in ("c", "f", "celsius", "fahrenheit"):
            return "°" + nxt[0], 2
        return UNITS[t.low], 1
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
        if part in UNITS:
            return UNITS[part], 1
    return "", 0


def count_numbers(tokens: list[Token]) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    i = 0
    while i < len(tokens):
        t = tokens[i]
        value: Decimal | str | None = None
        unit = ""
        start = i
        if t.kind == "num":
            value = _decimal(t.text)
            unit = UNITS.get(t.suffix, t.suffix)
            if unit == "k" and isinstance(value, Decimal):  # 10k = 10,000
                value, unit = value * 1000, ""
            i += 1
        elif t.kind == "word" and t.low in NUMBER_WORDS:
            i = _word_number_end(tokens, i)
            words = [w.low for w in tokens[start:i] if w.low in NUMBER_WORDS]
            value = _word_value(words)
            # "one" alone is as often a pronoun ("which one") as a count: it counts only with a unit or multiplier.
            if words == ["one"] and not _unit_after(tokens, i)[1]:
                value = None
        elif t.kind == "word" and (t.low in ORDINALS or (t.low == "second" and i and tokens[i - 1].low == "the")):
            value, unit = Decimal(ORDINALS.get(t.low, 2)), "th"
            i += 1
        else:
            i += 1
            continue
        if value is None:
            continue
        if isinstance(value, Decimal) and i < len(tokens) and tokens[i].low in MULTIPLIERS:
            value *= MULTIPLIERS[tokens[i].low]
            i += 1
        if not unit:
            unit, used_tokens = _unit_after(tokens, i)
            i += used_tokens
        if not unit and start > 0:
            before = tokens[start - 1]
            if before.low in ("$", "€", "£", "¥") or (before.kind == "word" and before.low in ("usd", "eur", "gbp")):
                unit = UNITS[before.low]
        found[_canonical(value), unit] += 1
    return found


def _word_value(words: list[str]) -> Decimal:
    """The value of number words: "twenty one", "two hundred fifty", "a dozen", "three thousand"."""
    total = current = 0
    for w in words:
        if w in SMALL:
            current += SMALL[w]
        elif w == "dozen":
            current = max(current, 1) * 12
        elif w == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * MULTIPLIERS[w]
            current = 0
    return Decimal(total + current)


def _word_number_end(tokens: list[Token], i: int) -> int:
    """Index after a run of number words (hyphenated or joined by "and")."""
    j = i
    while j < len(tokens):
        t = tokens[j]
        number = t.kind == "word" and t.low in NUMBER_WORDS
        joins = t.low == "and" and j > i and j + 1 < len(tokens) and tokens[j + 1].low in SMALL
        if not (number or joins):
            break
        j += 1
    return j
