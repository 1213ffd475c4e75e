"""Reading app settings: values with the catalog's defaults, problems collected rather than raised one by one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared.catalog import BY_NAME


class SettingsReader:
    """Collects problems instead of stopping at the first one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return BY_NAME[name].default if name in BY_NAME else None
        return value.strip()

    def number(self, name: str, *, minimum: float, integer: bool = False) -> float:
        text = self.raw(name)
        default = BY_NAME[name].default
        try:
            value = float(int(text)) if integer and text is not None else float(text or default or 0)
        except ValueError:
            self.problems.append(f"{name}: expected a {'whole ' if integer else ''}number, got {text!r}")
            return float(default or 0)
        if value < minimum:
            self.problems.append(f"{name}: must be at least {minimum}, got {text}")
        return value

    def flag(self, name: str) -> bool:
        text = (self.raw(name) or "false").lower()
        if text not in {"true", "false", "1", "0", "yes", "no"}:
            self.problems.append(f"{name}: expected true or false, got {text!r}")
        return text in {"true", "1", "yes"}

    def json(self, name: str) -> Any:
        text = self.raw(name)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            self.problems.append(f"{name}: not valid JSON ({exc.msg} at position {exc.pos})")
            return None
