"""A streamed cache miss, recorded as it is forwarded: the events reassembled into the chat.completion they stand for.

The recorder hands the result to an `AnswerSink` (the cache stage), which
applies the same storable rules as for a unary answer and stores it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared.cache.storable import MAX_RESPONSE_BYTES, filtered
from shared.models import Usage

if TYPE_CHECKING:
    from shared.cache.key import Plan


class AnswerSink(Protocol):
    """Where a recorded answer goes: `keep` stores it if it may be stored, `skip` counts why it was not."""

    def keep(self, plan: Plan, answer: Mapping[str, Any], body: bytes) -> None: ...

    def skip(self, reason: str) -> None: ...


class StreamRecorder:
    """Reassembles a forwarded chat stream into the chat.completion it stands for."""

    def __init__(self, sink: AnswerSink, plan: Plan) -> None:
        self._sink = sink
        self._plan = plan
        self._buffer = b""
        self._size = 0
        self._head: dict[str, Any] = {}
        self._content: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._refused = False
        self._filtered = False
        self._broken: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        self._size += len(chunk)
        if self._size > 4 * MAX_RESPONSE_BYTES:  # stream framing is verbose; the assembled answer is checked too
            self._broken = "too large"
            return
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            self._event(event)

    def _event(self, event: bytes) -> None:
        data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return
        try:
            payload = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._broken = "unreadable event"
            return
        if not isinstance(payload, dict):
            return
        if "error" in payload:
            self._broken = "error event"
            return
        for key in ("id", "model", "system_fingerprint", "created"):
            if payload.get(key) and key not in self._head:
                self._head[key] = payload[key]
        prompt_filters = payload.get("prompt_filter_results") or []
        if any(isinstance(p, dict) and filtered(p.get("content_filter_results")) for p in prompt_filters):
            self._filtered = True
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:
                self._broken = "not one choice"
                return
            self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        if filtered(choice.get("content_filter_results")):
            self._filtered = True
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("content"), str):
            self._content.append(delta["content"])
        if delta.get("refusal"):
            self._refused = True
        if delta.get("function_call"):
            self._broken = "function call"
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            slot = self._tool_calls.setdefault(
                int(call.get("index", 0)), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                slot["id"] = call["id"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""

    def complete(self, usage: Usage | None) -> None:
        """The stream ended with [DONE] and no error: store what it said, if it may be cached."""
        reason = (
            self._broken or ("refusal" if self._refused else None) or ("content filtered" if self._filtered else None)
        )
        if reason:
            self._sink.skip(reason)
            return
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content) or None}
        if self._tool_calls:
            message["tool_calls"] = [self._tool_calls[i] for i in sorted(self._tool_calls)]
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": self._finish, "logprobs": None}
        tokens = usage or Usage()
        answer = {
            "id": self._head.get("id", ""),
            "object": "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "system_fingerprint": self._head.get("system_fingerprint"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": tokens.prompt_tokens,
                "completion_tokens": tokens.completion_tokens,
                "total_tokens": tokens.total_tokens,
            },
        }
        self._sink.keep(self._plan, answer, json.dumps(answer, separators=(",", ":")).encode())
