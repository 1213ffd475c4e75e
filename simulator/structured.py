"""Structured output: the smallest JSON value that satisfies a caller's JSON Schema, for `json_schema` and tool calls.

A real model fills a schema with meaning; the simulator only has to be valid,
so it builds a minimal instance: every required property (and, under
`strict`, every listed one), the first enum value, the lower bound of a
number, `minItems` copies of an array's item. Strings come from the lorem
text so two fields do not all say the same thing. `$ref` into `$defs` /
`definitions`, `anyOf` / `oneOf` (first non-null branch), `allOf` (merged)
and type lists are followed, which covers what pydantic and zod emit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping

from simulator.text import WORDS

_MAX_DEPTH = 24

# Strings with a known `format` must parse as that format, or a strict client (pydantic) rejects the answer.
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "duration": "PT1S",
}


class SchemaError(ValueError):
    """A schema the simulator cannot satisfy (an unresolvable `$ref`, nesting too deep)."""


def instance(schema: object, *, seed: int = 0) -> object:
    """A JSON value valid against `schema` (a JSON Schema as parsed JSON); `seed` varies the words in strings."""
    root = schema if isinstance(schema, Mapping) else {}
    return _Builder(root, seed).build(root, 0)


def json_text(schema: object, *, seed: int = 0) -> str:
    """`instance` as the compact JSON text a model would answer with."""
    return json.dumps(instance(schema, seed=seed), separators=(",", ":"))


def pieces(text: str, size: int = 4) -> Iterator[str]:
    """A text cut into stream deltas of `size` characters, as a model streams JSON a few characters at a time."""
    for start in range(0, len(text), size):
        yield text[start : start + size]


class _Builder:
    __slots__ = ("_root", "_words")

    def __init__(self, root: Mapping[str, object], seed: int) -> None:
        self._root = root
        self._words = seed

    def build(self, schema: object, depth: int) -> object:
        if depth > _MAX_DEPTH:
            raise SchemaError("the schema nests deeper than the simulator follows")
        if schema is True or not isinstance(schema, Mapping):
            return {}
        if "$ref" in schema:
            return self.build(self._resolve(str(schema["$ref"])), depth + 1)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                non_null = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
                return self.build(non_null[0] if non_null else branches[0], depth + 1)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged: dict[str, object] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in all_of:
                resolved = self._resolve(str(part["$ref"])) if isinstance(part, Mapping) and "$ref" in part else part
                if isinstance(resolved, Mapping):
                    _merge(merged, resolved)
            return self.build(merged, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            kind = kinds[0] if kinds else "null"
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        return self._typed(str(kind), schema, depth)

    def _typed(self, kind: str, schema: Mapping[str, object], depth: int) -> object:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            count = _int(schema.get("minItems"), 1)
            return [self.build(schema.get("items", {}), depth + 1) for _ in range(count)]
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return _integer(schema)
        if kind == "number":
            return _number(schema)
        if kind == "boolean":
            return True
        return None

    def _object(self, schema: Mapping[str, object], depth: int) -> dict[str, object]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        # A schema that lists properties but requires none still gets them: an empty answer says nothing.
        if not names:
            names = list(properties)
        return {name: self.build(properties.get(name, {}), depth + 1) for name in names}

    def _string(self, schema: Mapping[str, object]) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        word = WORDS[self._words % len(WORDS)].strip(",.").lower()
        self._words += 1
        minimum, maximum = _int(schema.get("minLength"), 0), schema.get("maxLength")
        text = word
        while len(text) < minimum:
            text += word
        if isinstance(maximum, int) and not isinstance(maximum, bool):
            text = text[:maximum]
        return text

    def _resolve(self, ref: str) -> object:
        if not ref.startswith("#"):
            raise SchemaError(f"only local references are followed, not {ref!r}")
        node: object = self._root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or key not in node:
                raise SchemaError(f"the reference {ref!r} points nowhere")
            node = node[key]
        return node


def _merge(into: dict[str, object], part: Mapping[str, object]) -> None:
    for key, value in part.items():
        if key == "properties" and isinstance(value, Mapping):
            existing = into.get("properties")
            into["properties"] = {**(existing if isinstance(existing, Mapping) else {}), **value}
        elif key == "required" and isinstance(value, list):
            existing = into.get("required")
            into["required"] = [*(existing if isinstance(existing, list) else []), *value]
        else:
            into.setdefault(key, value)


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _integer(schema: Mapping[str, object]) -> int:
    low = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
        return math.floor(exclusive) + 1
    if isinstance(low, int | float) and not isinstance(low, bool):
        return math.ceil(low)
    high = schema.get("maximum")
    if isinstance(high, int | float) and not isinstance(high, bool) and high < 1:
        return math.floor(high)
    return 1


def _number(schema: Mapping[str, object]) -> float:
    low = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
        return float(exclusive) + 0.5
    if isinstance(low, int | float) and not isinstance(low, bool):
        return float(low)
    high = schema.get("maximum")
    if isinstance(high, int | float) and not isinstance(high, bool) and high < 1:
        return float(high)
    return 1.0
