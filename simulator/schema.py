"""Request bodies as typed values: the parts of a chat or embeddings request the simulator acts on.

Parsing is deliberately lenient (unknown fields are ignored, as Azure does)
but strict about the fields it uses, answering 400 with the offending `param`.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.text import count_prompt_tokens

MAX_CHOICES = 128


class InvalidRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[object]
    max_tokens: int | None  # max_completion_tokens, else max_tokens, else None
    n: int
    stream: bool
    include_usage: bool
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    texts: list[str]
    prompt_tokens: int
    dimensions: int | None
    base64: bool


def _optional_int(body: dict[str, object], name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (maximum and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
        raise InvalidRequest(f"'{name}' must be an integer {bounds}.", name)
    return value


def is_stream(body: object) -> bool:
    """Whether a (possibly invalid) body asks for a stream; faults need it before validation answers."""
    return isinstance(body, dict) and body.get("stream") is True


def parse_chat(body: object) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", "messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise InvalidRequest("Every message must be an object with a 'role'.", "messages")
    max_tokens = _optional_int(body, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens", minimum=1)
    n = _optional_int(body, "n", minimum=1, maximum=MAX_CHOICES) or 1
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequest("'stream' must be a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise InvalidRequest("'stream_options' is only allowed with 'stream': true.", "stream_options")
    return ChatRequest(
        messages=messages,
        max_tokens=max_tokens,
        n=n,
        stream=bool(stream),
        include_usage=bool(options and options.get("include_usage") is True),
        prompt_tokens=count_prompt_tokens(messages),
    )


def parse_embeddings(body: object) -> EmbeddingRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    raw = body.get("input")
    # One string, one token array, or a list of either; token arrays are hashed as their digits.
    items: list[object]
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        items = [raw]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise InvalidRequest("'input' must be a string, an array of tokens, or a non-empty array of those.", "input")
    texts: list[str] = []
    tokens = 0
    for item in items:
        if isinstance(item, str) and item:
            texts.append(item)
            tokens += max(1, len(item.split()))
        elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            texts.append(" ".join(map(str, item)))
            tokens += len(item)
        else:
            raise InvalidRequest("Every 'input' item must be a non-empty string or array of integer tokens.", "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64", None):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return EmbeddingRequest(
        texts=texts,
        prompt_tokens=tokens,
        dimensions=_optional_int(body, "dimensions", minimum=1),
        base64=encoding == "base64",
    )
