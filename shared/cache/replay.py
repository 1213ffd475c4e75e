"""A cache hit sent as a stream: the stored chat.completion as the chunks a backend would have streamed."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

_REPLAY_PIECE = re.compile(r"\S+\s*|\s+")


async def replay(answer: dict[str, Any], *, include_usage: bool) -> AsyncIterator[bytes]:
    """A stored answer as the chunks a backend would have streamed, then (if asked) a zero usage chunk and [DONE]."""
    choice = answer["choices"][0]
    message = choice.get("message") or {}
    head = {
        "id": answer["id"],
        "object": "chat.completion.chunk",
        "created": answer["created"],
        "model": answer.get("model", ""),
        "system_fingerprint": answer.get("system_fingerprint"),
    }
    extra = {"usage": None} if include_usage else {}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    pieces = _REPLAY_PIECE.findall(message.get("content") or "")
    for at in range(0, len(pieces), 8):  # a few words per event, as a model would send them
        yield event({"content": "".join(pieces[at : at + 8])})
    for index, call in enumerate(message.get("tool_calls") or []):
        yield event({"tool_calls": [{"index": index, **call}]})
    yield event({}, choice.get("finish_reason") or "stop")
    if include_usage:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        yield b"data: " + json.dumps({**head, "choices": [], "usage": usage}, separators=(",", ":")).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
