"""Server-sent events as they pass through: split into events, read the usage, drop the usage chunk we asked for.

Bytes are forwarded as whole events as they arrive. A read that holds only
ordinary events (no usage object, no `[DONE]`, no CR) is passed on as it is
after a few byte scans (`rfind`, `count`, `in`), without splitting it into
events or decoding anything; only a read that may carry the usage or the end
goes event by event, and only an event with a usage object is parsed as JSON.
The counts kept on the way (`content_events`) are what metering charges for
a stream cut before its usage arrived.

Two dialects: chat and legacy completions end with `data: [DONE]` and carry
`usage` at the top of a chunk; the Responses API sends typed events
(`event: response.output_text.delta`) and ends with `response.completed` (or
`.failed` / `.incomplete`), whose `response.usage` is the one read
(`input_tokens`, `output_tokens` and their details). Its first event,
`response.created`, names the stored response's id, which the gateway pins
to the backend (`shared.affinity`); typed streams always go event by event.
`PassThrough` relays bytes that are not events at all (speech audio, file
contents) unchanged.
"""

from __future__ import annotations

import json

from shared.models import Usage

_SEPARATORS = (b"\n\n", b"\r\n\r\n")
DONE = b"data: [DONE]\n\n"


# The events that end a Responses stream; nothing follows them (no [DONE]).
_RESPONSE_ENDS = (b'"response.completed"', b'"response.failed"', b'"response.incomplete"')


def error_event(message: str, code: str = "backend_error", *, typed: bool = False) -> bytes:
    """A well-formed error event; the openai SDK raises it as an APIError (a Responses stream: an `error` event)."""
    if typed:
        payload: dict[str, object] = {"type": "error", "code": code, "message": message, "param": None}
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"
    payload = {"error": {"message": message, "type": "server_error", "code": code, "param": None}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _data(event: bytes) -> bytes:
    lines = [line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines)


def _content_events(events: bytes) -> int:
    """Events that carry generated text (one choice per event): the compact form first, as Azure sends it."""
    # A legacy completion's chunk carries `text`, a chat chunk `content`.
    return events.count(b'"content":"') or events.count(b'"content": "') or events.count(b'"text":"')


class SseRelay:
    """Feed upstream bytes; get back whole events to forward, and the usage once seen."""

    def __init__(self, *, strip_usage_chunk: bool, typed: bool = False) -> None:
        self._strip = strip_usage_chunk
        self.typed = typed  # the Responses API's typed events
        self._buffer = b""
        self.usage: Usage | None = None
        self.done = False
        self.content_events = 0  # events carrying generated text: about one token each
        self.object_id: str | None = None  # a Responses stream's response id, from `response.created`

    def end(self) -> None:
        """The backend closed the stream; an event stream is complete only if its last event said so."""

    def feed(self, chunk: bytes) -> bytes:
        """Complete events from this chunk (and any held-over partial event), ready to send."""
        if self._buffer:
            chunk = self._buffer + chunk
        if self.typed or b"\r" in chunk:  # typed events (their id and end matter) or CRLF: the careful path
            self._buffer = chunk
            return self._split()
        end = chunk.rfind(b"\n\n") + 2
        if end == 1:  # no event ends in what we have yet
            self._buffer = chunk
            return b""
        whole = chunk[:end] if end < len(chunk) else chunk
        if b"[DONE]" in whole or whole.count(b'"usage"') != whole.count(b'"usage":null'):
            self._buffer = chunk  # the usage or the end may be here: event by event
            return self._split()
        self._buffer = chunk[end:]
        # The common case: ordinary events, passed on untouched.
        self.content_events += _content_events(whole)
        return whole

    def _split(self) -> bytes:
        out: list[bytes] = []
        while True:
            cut, sep_len = self._next_boundary()
            if cut < 0:
                break
            event = self._buffer[: cut + sep_len]
            self._buffer = self._buffer[cut + sep_len :]
            if self._keep(event):
                out.append(event)
        return b"".join(out)

    def _next_boundary(self) -> tuple[int, int]:
        best, length = -1, 0
        for sep in _SEPARATORS:
            i = self._buffer.find(sep)
            if i >= 0 and (best < 0 or i < best):
                best, length = i, len(sep)
        return best, length

    def _keep(self, event: bytes) -> bool:
        if self.typed:
            return self._typed(event)
        if b"[DONE]" in event and _data(event) == b"[DONE]":
            self.done = True
            return True
        self.content_events += _content_events(event)
        at = event.find(b'"usage"')
        if at < 0:
            return True
        rest = event[at + 7 :].lstrip(b": \t")
        if not rest.startswith(b"{"):
            return True  # "usage": null on an ordinary chunk
        try:
            payload = json.loads(_data(event))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return True
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if isinstance(usage, dict):
            self.usage = Usage.from_json(usage)
            if self._strip and not payload.get("choices"):
                return False
        return True

    def _typed(self, event: bytes) -> bool:
        """A Responses event: deltas counted, the id read from the first event, the usage from the last."""
        if b"output_text.delta" in event or b"arguments.delta" in event:
            self.content_events += 1
            return True
        created = self.object_id is None and b'"response.created"' in event
        ends = any(marker in event for marker in _RESPONSE_ENDS)
        if not (created or ends):
            if b'"type":"error"' in event or b"event: error" in event:
                self.done = True  # the backend's own error event ends the stream; nothing of ours is added
            return True
        try:
            payload = json.loads(_data(event))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return True
        response = payload.get("response") if isinstance(payload, dict) else None
        if not isinstance(response, dict):
            return True
        if created and isinstance(response.get("id"), str):
            self.object_id = response["id"]
        if ends and payload.get("type") in ("response.completed", "response.failed", "response.incomplete"):
            self.done = True
            usage = response.get("usage")
            if isinstance(usage, dict):
                self.usage = Usage.from_json(usage)
        return True

    def leftover(self) -> bytes:
        """An unterminated trailing event (the stream ended mid-event)."""
        return self._buffer


class PassThrough:
    """Bytes that are not events (speech audio, a file's content), relayed as they come; complete when they end."""

    typed = False
    usage: Usage | None = None
    content_events = 0
    object_id: str | None = None

    def __init__(self) -> None:
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def end(self) -> None:
        self.done = True
