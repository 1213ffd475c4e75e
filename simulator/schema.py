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
class Tool:
    """A function the caller offers; `parameters` is its JSON Schema (empty: no arguments)."""

    name: str
    parameters: dict[str, object]


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """`response_format` (chat) or `text.format` (responses): "text", "json_object" or "json_schema"."""

    kind: str
    schema: dict[str, object] | None = None


TEXT = ResponseFormat("text")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[object]
    max_tokens: int | None  # max_completion_tokens, else max_tokens, else None
    n: int
    stream: bool
    include_usage: bool
    prompt_tokens: int
    tools: tuple[Tool, ...] = ()
    # The tool the model must call (a name), "none", "auto" or "required".
    tool_choice: str = "auto"
    response_format: ResponseFormat = TEXT


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
    tools = parse_tools(body.get("tools"), nested=True)
    return ChatRequest(
        messages=messages,
        max_tokens=max_tokens,
        n=n,
        stream=bool(stream),
        include_usage=bool(options and options.get("include_usage") is True),
        prompt_tokens=count_prompt_tokens(messages),
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools, nested=True),
        response_format=parse_response_format(body.get("response_format"), "response_format", nested=True),
    )


def parse_tools(raw: object, *, nested: bool) -> tuple[Tool, ...]:
    """Function tools: chat nests them (`{"type", "function": {"name", ...}}`), responses does not."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest("'tools' must be an array.", "tools")
    tools: list[Tool] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            # Built-in tools (file search, code interpreter, ...) are accepted and never called by the simulator.
            if isinstance(tool, dict) and isinstance(tool.get("type"), str) and not nested:
                continue
            raise InvalidRequest(f"'tools[{i}]' must be a function tool.", f"tools[{i}]")
        spec = tool.get("function") if nested else tool
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise InvalidRequest(f"'tools[{i}]' needs a function name.", f"tools[{i}]")
        parameters = spec.get("parameters")
        tools.append(Tool(spec["name"], parameters if isinstance(parameters, dict) else {}))
    return tuple(tools)


def parse_tool_choice(raw: object, tools: tuple[Tool, ...], *, nested: bool) -> str:
    if raw is None:
        return "auto"
    if raw in ("none", "auto", "required"):
        return str(raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        spec = raw.get("function") if nested else raw
        name = spec.get("name") if isinstance(spec, dict) else None
        if isinstance(name, str) and any(t.name == name for t in tools):
            return name
    raise InvalidRequest("'tool_choice' must be none, auto, required or a function among 'tools'.", "tool_choice")


def parse_response_format(raw: object, param: str, *, nested: bool) -> ResponseFormat:
    """Chat nests the schema (`{"type": "json_schema", "json_schema": {"schema"}}`); responses' `text.format` not."""
    if raw is None:
        return TEXT
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(str(kind))
    if kind == "json_schema" and isinstance(raw, dict):
        spec = raw.get("json_schema") if nested else raw
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(schema, dict | None):
            return ResponseFormat("json_schema", schema or {})
        raise InvalidRequest(f"'{param}' of type json_schema needs a name and a schema object.", param)
    raise InvalidRequest(f"'{param}' must have a type of text, json_object or json_schema.", param)


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
