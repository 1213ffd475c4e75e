"""What is masked in an audit record before it is written: card-like digit runs that pass the Luhn check,
e-mail addresses, and the operator's own regular expressions (GATEWAY_PROMPT_LOG.redact).

Masking walks the record's string values, not its JSON text, so a pattern can
never break the JSON it is written in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

# 13-19 digits, optionally grouped by single spaces or hyphens: every card number length in use.
_CARD = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")
# Deliberately simple: a local part, an @, a dotted domain. Over-masking a look-alike costs nothing here.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_cards(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return "[REDACTED:credit_card]" if luhn_valid(digits) else match.group(0)

    return _CARD.sub(one, text)


def _mask_emails(text: str) -> str:
    return _EMAIL.sub("[REDACTED:email]", text)


class Redactor:
    """Masks every configured pattern in every string of a JSON-shaped value."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        steps: list[Callable[[str], str]] = []
        for pattern in patterns:
            if pattern == "credit_card":
                steps.append(_mask_cards)
            elif pattern == "email":
                steps.append(_mask_emails)
            else:
                steps.append(functools.partial(re.compile(pattern).sub, "[REDACTED]"))
        self._steps = tuple(steps)

    def text(self, value: str) -> str:
        for step in self._steps:
            value = step(value)
        return value

    def value(self, value: Any) -> Any:
        if not self._steps:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
