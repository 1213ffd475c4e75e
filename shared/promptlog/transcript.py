"""A relayed chat stream's completion, assembled from its events as they pass to the caller.

`feed` is called with each chunk right after it was handed on, does a few
dictionary updates per event and never awaits, so the caller's stream is not
slowed; it stops collecting past a size cap and says so in the result.
"""

from __future__ import annotations

import json
from typing import Any


class StreamTranscript:
    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._buffer = b""
        self._chars = 0
        self._content: dict[int, list[str]] = {}
        self._tool_calls: dict[int, dict[int, dict[str, Any]]] = {}
        self._finish: dict[int, str] = {}
        self._head: dict[str, Any] = {}
        self._events = 0
        self.truncated = False
        self._error: Any = None

    def feed(self, chunk: bytes) -> None:
        if self.truncated:
            return
        self._buffer += chunk
        if b"\n\n" not in self._buffer and b"\r\n\r\n" not in self._buffer:
            return
        events = self._buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        self._buffer = events.pop()
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        if not data.startswith(b"{"):
            return  # [DONE], or a comment
        try:
            payload = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if not isinstance(payload, dict):
            return
        self._events += 1
        if "error" in payload:
            self._error = payload["error"]
            return
        for key in ("id", "model", "created", "system_fingerprint"):
            if key not in self._head and payload.get(key):
                self._head[key] = payload[key]
        for choice in payload.get("choices") or ():
            if isinstance(choice, dict):
                self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0) if isinstance(choice.get("index"), int) else 0
        if choice.get("finish_reason"):
            self._finish[index] = str(choice["finish_reason"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._chars += len(content)
            if self._chars > self._max_chars:
                self.truncated = True
                return
            self._content.setdefault(index, []).append(content)
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            slot = self._tool_calls.setdefault(index, {}).setdefault(
                call.get("index", 0) if isinstance(call.get("index"), int) else 0,
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call.get("id"):
                slot["id"] = call["id"]
            function = call.get("function")
            if isinstance(function, dict):
                slot["function"]["name"] += str(function.get("name") or "")
                arguments = str(function.get("arguments") or "")
                self._chars += len(arguments)
                slot["function"]["arguments"] += arguments

    def result(self) -> dict[str, Any]:
        """The completion the stream stood for, shaped like a chat.completion (without usage: the record has it)."""
        choices = []
        for index in sorted(set(self._content) | set(self._tool_calls) | set(self._finish)):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content.get(index, ()))}
            calls = self._tool_calls.get(index)
            if calls:
                message["tool_calls"] = [calls[i] for i in sorted(calls)]
            choices.append({"index": index, "message": message, "finish_reason": self._finish.get(index)})
        out: dict[str, Any] = {**self._head, "object": "chat.completion", "choices": choices, "events": self._events}
        if self._error is not None:
            out["error"] = self._error
        if self.truncated:
            out["truncated"] = True
        return out
