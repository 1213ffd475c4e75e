"""What a simulated chat completion says, as plain data: each choice's answer, the body, and the stream's chunks.

A choice answers in one of three ways, decided from the request alone so
the same request always gets the same answer:

    a tool call   the request offers tools, `tool_choice` is not "none", and
                  the last message is not already a tool's result (so an
                  agent loop ends: call, result, answer)
    JSON          `response_format` json_schema (a minimal valid instance of
                  the schema) or json_object
    text          lorem ipsum chosen by the prompt

Every answer is a list of pieces (one per completion token), streamed one
piece per chunk; `max_tokens` cuts the pieces and makes the finish reason
"length". Nothing here touches HTTP: the batch runner builds the same
bodies as the HTTP handler.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from simulator import contentfilter
from simulator.schema import ChatRequest, Tool
from simulator.structured import json_text, pieces
from simulator.text import completion_offset, completion_pieces, completion_text, last_user_text

FINGERPRINT = "fp_simulator"


@dataclass(frozen=True, slots=True)
class Answer:
    """One choice: its pieces (content, or a tool call's argument text), finish reason, and the tool if any."""

    pieces: tuple[str, ...]
    finish: str
    tool: Tool | None = None
    call_id: str = ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def calls_tool(messages: Sequence[object], tools: Sequence[Tool], tool_choice: str) -> Tool | None:
    """The tool the model calls now, if any (see the module docstring for the rule)."""
    if not tools or tool_choice == "none":
        return None
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") in ("tool", "function"):
        return None
    named = [t for t in tools if t.name == tool_choice]
    return named[0] if named else tools[0]


def answers(chat: ChatRequest, *, request_key: str, default_tokens: int) -> list[Answer]:
    """Every choice's answer. `request_key` makes tool call ids unique per request."""
    prompt = last_user_text(chat.messages)
    tool = calls_tool(chat.messages, chat.tools, chat.tool_choice)
    made = []
    for index in range(chat.n):
        offset = completion_offset(prompt, index)
        if tool is not None:
            whole = tuple(pieces(json_text(tool.parameters, seed=offset)))
        elif chat.response_format.kind == "json_schema":
            whole = tuple(pieces(json_text(chat.response_format.schema or {}, seed=offset)))
        elif chat.response_format.kind == "json_object":
            words = completion_text(offset, chat.max_tokens or default_tokens)
            whole = tuple(pieces(json.dumps({"answer": words}, separators=(",", ":"))))
        else:
            whole = completion_pieces(offset, chat.max_tokens or default_tokens)
        cut = chat.max_tokens is not None and (chat.max_tokens < len(whole) or _is_text(chat, tool))
        kept = whole[: chat.max_tokens] if chat.max_tokens is not None else whole
        finish = "length" if cut else "tool_calls" if tool is not None else "stop"
        call_id = "call_" + hashlib.sha256(f"{request_key}:{index}".encode()).hexdigest()[:24] if tool else ""
        made.append(Answer(kept, finish, tool, call_id))
    return made


def _is_text(chat: ChatRequest, tool: Tool | None) -> bool:
    # A plain-text cap is always reached (the lorem text never ends on its own), as the simulator always did.
    return tool is None and chat.response_format.kind == "text"


def usage(chat: ChatRequest, made: Sequence[Answer]) -> dict[str, int]:
    completion = sum(len(a.pieces) for a in made)
    return {
        "prompt_tokens": chat.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": chat.prompt_tokens + completion,
    }


def message(answer: Answer) -> dict[str, object]:
    if answer.tool is None:
        return {"role": "assistant", "content": answer.text, "refusal": None}
    call = {"id": answer.call_id, "type": "function", "function": {"name": answer.tool.name, "arguments": answer.text}}
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}


def completion_body(
    *, completion_id: str, created: int, model: str, made: Sequence[Answer], usage: Mapping[str, int]
) -> dict[str, object]:
    """A non-streamed chat completion, with the content-filter results Azure adds."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "prompt_filter_results": contentfilter.prompt_filter_results(),
        "choices": [
            {
                "index": j,
                "message": message(answer),
                "logprobs": None,
                "finish_reason": answer.finish,
                "content_filter_results": contentfilter.choice_results(),
            }
            for j, answer in enumerate(made)
        ],
        "usage": dict(usage),
    }


def _encode(value: object) -> bytes:
    return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"


def stream_chunks(
    *,
    completion_id: str,
    created: int,
    model: str,
    made: Sequence[Answer],
    usage: Mapping[str, int],
    include_usage: bool,
    filter_results: bool,
) -> Iterator[tuple[int, bytes]]:
    """Server-sent events of a streamed completion, each with its pacing step (0 = role, k = k-th token).

    With `filter_results`, the stream opens as Azure's does, with a chunk that
    has no choices and carries `prompt_filter_results` (its id, model and
    object are empty, as Azure sends them), and each content chunk carries the
    choice's `content_filter_results`.
    """
    head: dict[str, object] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }
    if include_usage:
        # OpenAI sends an explicit null on every chunk but the last when usage is asked for.
        head["usage"] = None

    def event(index: int, delta: Mapping[str, object], finish: str | None = None, *, filtered: bool = False) -> bytes:
        choice: dict[str, object] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        if filter_results:
            choice["content_filter_results"] = contentfilter.choice_results() if filtered else {}
        return _encode({**head, "choices": [choice]})

    if filter_results:
        prompt_chunk = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
        yield 0, _encode({**prompt_chunk, "prompt_filter_results": contentfilter.prompt_filter_results()})
    for index, answer in enumerate(made):
        yield 0, event(index, _first_delta(answer))
    steps = max((len(a.pieces) for a in made), default=0)
    for step in range(steps):
        for index, answer in enumerate(made):
            if step < len(answer.pieces):
                yield step + 1, event(index, _piece_delta(answer, step), filtered=True)
    for index, answer in enumerate(made):
        yield steps, event(index, {}, answer.finish)
    if include_usage:
        yield steps, _encode({**head, "choices": [], "usage": dict(usage)})
    yield steps, b"data: [DONE]\n\n"


def _first_delta(answer: Answer) -> dict[str, object]:
    if answer.tool is None:
        return {"role": "assistant", "content": ""}
    call = {
        "index": 0,
        "id": answer.call_id,
        "type": "function",
        "function": {"name": answer.tool.name, "arguments": ""},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _piece_delta(answer: Answer, step: int) -> dict[str, object]:
    if answer.tool is None:
        return {"content": answer.pieces[step]}
    return {"tool_calls": [{"index": 0, "function": {"arguments": answer.pieces[step]}}]}
