"""Where a request's answer is looked up and stored: normalisation, the scope, the exact key and the lookup text.

Entries match only within a scope (subscription, deployment, system messages,
earlier turns, tools, parameters); within it the trailing `lookup_messages`
turns give the exact key and the text that may be matched by meaning.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.api import ApiCall
    from shared.cache.config import CacheConfig
    from shared.models import Caller
    from shared.stores.protocols import Vector

# Parameters that change the shape of the answer: always in the scope.
SHAPE_PARAMETERS = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "modalities",
)
SYSTEM_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a request's answer would be looked up and stored."""

    scope: str
    key: str
    text: str  # the lookup text (normalised trailing messages), compared by the guard
    semantic: bool  # the text may be embedded and matched by similarity
    vector: Vector | None = field(default=None, compare=False, repr=False)


def plan_for(config: CacheConfig, caller: Caller, call: ApiCall) -> Plan | str:
    """The scope and key of a request, or why it cannot be cached."""
    body = call.body
    n = body.get("n", 1)
    if n != 1:
        return "n > 1"
    if body.get("logprobs") is True:
        return "logprobs requested"
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        return "non-text output"
    messages: list[dict[str, Any]] = body["messages"]
    system = [m for m in messages if m.get("role") in SYSTEM_ROLES]
    turns = [m for m in messages if m.get("role") not in SYSTEM_ROLES]
    if not turns:
        return "no user message"
    window, history = turns[-config.lookup_messages :], turns[: -config.lookup_messages]
    texts = [_content(m)[1] for m in window]
    scope = _digest(
        {
            "v": 1,
            "subscription": None if config.shared_scope else caller.subscription_id,
            "deployment": call.deployment,
            "system": [] if config.ignore_system_messages else [_canonical(m) for m in system],
            "history": [_canonical(m) for m in history],
            "shape": {k: body[k] for k in SHAPE_PARAMETERS if k in body},
            "sampling": {k: body[k] for k in config.vary_by if k in body},
        }
    )[:40]
    key = _digest([_canonical(m) for m in window])
    text = "\n".join(t for t in texts if t) if all(t is not None for t in texts) else ""
    # Only a question is matched by meaning; a window ending in a tool result or an assistant turn is not.
    semantic = (
        config.semantic and window[-1].get("role") == "user" and bool(text) and len(text) <= config.semantic_max_chars
    )
    return Plan(scope, key, text, semantic)


def normalise(text: str) -> str:
    """What never changes a prompt's meaning: Unicode composition, line endings, surrounding space.

    Inner whitespace stays: in code and YAML indentation is meaning.
    """
    return unicodedata.normalize("NFC", text).replace("\r\n", "\n").strip()


def _content(message: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(canonical content for hashing, its plain text or None when it has non-text parts)."""
    content = message.get("content")
    if content is None:
        return None, ""
    if isinstance(content, str):
        text = normalise(content)
        return text, text
    if isinstance(content, list):
        texts: list[str] = []
        canonical: list[Any] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(normalise(part["text"]))
                canonical.append(texts[-1])
            else:
                return content, None
        return canonical, "\n".join(texts)
    return content, None


def _canonical(message: Mapping[str, Any]) -> dict[str, Any]:
    content, _ = _content(message)
    out = {k: v for k, v in message.items() if k != "content"}
    out["content"] = content
    return out


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
