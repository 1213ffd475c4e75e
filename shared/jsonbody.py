"""A caller's JSON body, parsed so that nothing in it can fail later: bounded nesting, encodable strings, no NaN.

Python's `json` accepts what a backend or a store may not: `NaN` and
`Infinity`, lone surrogates (`"\\ud800"`, which no UTF-8 encoder can write)
and nesting deep enough to exhaust the recursion limit of whatever walks the
value next (the cache key, the prompt counter, `json.dumps` on the way out).
Every route that reads a body parses it here, so each of those is a 400 in
the envelope before anything is reserved or forwarded.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import BadRequest

MAX_DEPTH = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check(value: Any, max_depth: int) -> None:
    """Walk without recursion: depth of containers, and strings (keys included) that UTF-8 can encode."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _encodable(item)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > max_depth:
            raise BadRequest(f"The request body is nested deeper than {max_depth} levels.", code="invalid_json")
        if isinstance(item, dict):
            for key, child in item.items():
                _encodable(key)
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            "The request body holds a string that cannot be encoded (a lone UTF-16 surrogate such as \\ud800).",
            code="invalid_json",
        ) from None


def load(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The body as a JSON value; `BadRequest` (400, `invalid_json`) for anything a later stage could choke on."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(f"The request body is nested deeper than {max_depth} levels.", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError, as is a refused NaN
        raise BadRequest(f"The request body is not valid JSON: {str(exc)[:200]}", code="invalid_json") from None
    # Raw UTF-8 cannot carry a surrogate (strict decoding refuses it), only a `\u` escape can; and a value cannot
    # be deeper than it has brackets. Both checks are C-speed scans, so a plain body costs no walk at all.
    if b"\\u" in body or body.count(b"[") + body.count(b"{") > max_depth:
        _check(value, max_depth)
    return value


def load_object(body: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    value = load(body, max_depth=max_depth)
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return value
