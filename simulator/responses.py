"""The Responses API: create (plain, streamed, background), retrieve, delete, input items and cancel.

    POST   /openai/v1/responses                      and /openai/responses?api-version=...
    GET    .../responses/{id}
    DELETE .../responses/{id}
    GET    .../responses/{id}/input_items            ?order=asc|desc&limit=N&after=ID
    POST   .../responses/{id}/cancel                 background responses only

Stored responses live in this simulator instance only (see `simulator.store`):
another instance answers 404 for the id, and for a `previous_response_id`
it does not hold. A chain is billed as the service bills it: each follow-up's
input includes the whole conversation before it, and that earlier part is
reported as cached. A background response goes queued, in_progress,
completed on the injected clock, so tests poll without sleeping long.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from simulator import chat, errors
from simulator.limits import limit_headers
from simulator.request import Call, Endpoint, encode
from simulator.schema import (
    InvalidRequest,
    ResponseFormat,
    Tool,
    parse_response_format,
    parse_tool_choice,
    parse_tools,
)
from simulator.store import Store, new_id
from simulator.structured import json_text, pieces
from simulator.text import (
    CONTENT_FILTER_TRIGGER,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    completion_offset,
    completion_pieces,
    completion_text,
    message_text,
)

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from simulator.app import Simulator

CREATE = Endpoint("Responses_Create", deployment="body")
READ = Endpoint("Responses_Get", deployment="none", body="none")
DELETE = Endpoint("Responses_Delete", deployment="none", body="none")
INPUT_ITEMS = Endpoint("Responses_ListInputItems", deployment="none", body="none")
CANCEL = Endpoint("Responses_Cancel", deployment="none", body="none")

# Reasoning tokens a reasoning request spends, by effort: enough to show up in usage, fixed for assertions.
REASONING_TOKENS = {"minimal": 2, "low": 4, "medium": 8, "high": 16}


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    model: str
    items: list[dict[str, object]]  # the input as items, each with an id
    instructions: str | None
    previous_response_id: str | None
    max_output_tokens: int | None
    stream: bool
    store: bool
    background: bool
    text_format: ResponseFormat
    tools: tuple[Tool, ...]
    tool_choice: str
    reasoning_effort: str | None
    echo: dict[str, object] = field(default_factory=dict)  # fields sent back as given (metadata, temperature...)
    raw_tools: list[object] = field(default_factory=list)

    @property
    def prompt(self) -> str:
        for item in reversed(self.items):
            if item.get("type") == "message" and item.get("role") == "user":
                return _content_text(item.get("content"))
        return ""

    @property
    def prompt_tokens(self) -> int:
        texts = [_content_text(i.get("content", i.get("output", ""))) for i in self.items]
        if self.instructions:
            texts.append(self.instructions)
        return TOKENS_PER_REPLY + sum(TOKENS_PER_MESSAGE + len(t.split()) for t in texts)


def _content_text(content: object) -> str:
    return content if isinstance(content, str) else message_text(content)


def parse_create(body: object) -> ResponsesRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    items = _input_items(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string.", "instructions")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise InvalidRequest("'previous_response_id' must be a string.", "previous_response_id")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidRequest("'max_output_tokens' must be a positive integer.", "max_output_tokens")
    flags = {
        name: body.get(name, default) for name, default in (("stream", False), ("store", True), ("background", False))
    }
    for name, value in flags.items():
        if value is not None and not isinstance(value, bool):
            raise InvalidRequest(f"'{name}' must be a boolean.", name)
    store = flags["store"] is not False
    background = flags["background"] is True
    if background and not store:
        raise InvalidRequest("Background responses must be stored: 'store' cannot be false.", "background")
    text = body.get("text")
    text_format = parse_response_format(
        text.get("format") if isinstance(text, dict) else None, "text.format", nested=False
    )
    tools = parse_tools(body.get("tools"), nested=False)
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if effort is not None and (not isinstance(effort, str) or effort not in REASONING_TOKENS):
        raise InvalidRequest("'reasoning.effort' must be minimal, low, medium or high.", "reasoning.effort")
    echo = {
        k: body[k]
        for k in ("metadata", "temperature", "top_p", "user", "parallel_tool_calls", "truncation")
        if k in body
    }
    raw_tools = body.get("tools")
    return ResponsesRequest(
        model=str(body.get("model")),
        items=items,
        instructions=instructions,
        previous_response_id=previous,
        max_output_tokens=limit,
        stream=flags["stream"] is True,
        store=store,
        background=background,
        text_format=text_format,
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools, nested=False),
        reasoning_effort=effort if isinstance(effort, str) else None,
        echo=echo,
        raw_tools=raw_tools if isinstance(raw_tools, list) else [],
    )


def _input_items(raw: object) -> list[dict[str, object]]:
    """The input as the items `input_items` lists: a string is one user message; every item gets an id."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'input' must be a string or a non-empty array of input items.", "input")
    items: list[dict[str, object]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidRequest(f"'input[{i}]' must be an object.", f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item.get("role"), item.get("content")
            if role not in ("user", "system", "developer", "assistant") or not isinstance(content, str | list):
                raise InvalidRequest(f"'input[{i}]' must be a message with a role and content.", f"input[{i}]")
            parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
            if role == "assistant" and isinstance(content, str):
                parts = [{"type": "output_text", "text": content, "annotations": []}]
            items.append(
                {"id": new_id("msg_"), "type": "message", "role": role, "status": "completed", "content": parts}
            )
        elif isinstance(kind, str):
            items.append(
                {**item, "id": item.get("id") or new_id(_ITEM_PREFIXES.get(kind, "item_")), "status": "completed"}
            )
        else:
            raise InvalidRequest(f"'input[{i}].type' must be a string.", f"input[{i}].type")
    return items


_ITEM_PREFIXES = {"function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


class StoredResponse:
    """A response and what it needs to answer later reads; its status follows the clock when it runs in background."""

    __slots__ = ("body", "cancelled", "context_tokens", "created_at", "done_at", "input_items", "output", "usage")

    def __init__(
        self,
        body: dict[str, object],
        *,
        output: list[dict[str, object]],
        usage: dict[str, object],
        input_items: list[dict[str, object]],
        created_at: float,
        done_at: float,
        context_tokens: int,
    ) -> None:
        self.body = body
        # What a follow-up carries along: this response's whole input and its output.
        self.context_tokens = context_tokens
        self.output = output
        self.usage = usage
        self.input_items = input_items
        self.created_at = created_at
        self.done_at = done_at
        self.cancelled = False

    def status(self, now: float) -> str:
        if self.cancelled:
            return "cancelled"
        if now >= self.done_at:
            return "completed"
        return "in_progress" if now >= (self.created_at + self.done_at) / 2 else "queued"

    def to_json(self, now: float) -> dict[str, object]:
        status = self.status(now)
        if status != "completed":
            # Usage is not nullable in the specification: a response still running has none yet.
            return {**self.body, "status": status, "output": []}
        return {**self.body, "status": status, "output": self.output, "usage": self.usage}


class ResponsesApi:
    """The handlers, over one simulator's store of responses."""

    __slots__ = ("_sim", "_store")

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._store: Store[StoredResponse] = Store(sim.config.store_size)

    def routes(self, prefix: str, v1: bool) -> list[tuple[str, str, Handler]]:
        def ep(endpoint: Endpoint) -> Endpoint:
            return endpoint.with_v1() if v1 else endpoint

        sim = self._sim
        return [
            ("POST", f"{prefix}/responses", sim.handler(ep(CREATE), parse_create, self._create)),
            ("GET", f"{prefix}/responses/{{response_id}}", sim.handler(ep(READ), _nothing, self._retrieve)),
            ("DELETE", f"{prefix}/responses/{{response_id}}", sim.handler(ep(DELETE), _nothing, self._delete)),
            (
                "GET",
                f"{prefix}/responses/{{response_id}}/input_items",
                sim.handler(ep(INPUT_ITEMS), _nothing, self._input_items),
            ),
            ("POST", f"{prefix}/responses/{{response_id}}/cancel", sim.handler(ep(CANCEL), _nothing, self._cancel)),
        ]

    def clear(self) -> None:
        self._store.clear()

    async def _create(self, call: Call, request: ResponsesRequest, drop_after: int | None) -> web.StreamResponse:
        sim = self._sim
        if CONTENT_FILTER_TRIGGER in request.prompt:
            return errors.content_filtered()
        previous: StoredResponse | None = None
        if request.previous_response_id is not None:
            previous = self._store.get(request.previous_response_id)
            if previous is None:
                return errors.not_found(
                    f"Previous response with id '{request.previous_response_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
        carried = previous.context_tokens if previous is not None else 0
        input_tokens = request.prompt_tokens + carried
        budget = request.max_output_tokens or sim.config.default_max_tokens
        admission = sim.limiter.admit(str(call.deployment), input_tokens + budget)
        if not admission.allowed:
            return sim.refused(call, admission)
        now = sim.clock.now()
        response_id = new_id("resp_", 48)
        output, deltas = self._output(request, response_id, budget)
        reasoning = REASONING_TOKENS.get(request.reasoning_effort or "", 0)
        output_tokens = len(deltas) + reasoning
        usage: dict[str, object] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": carried},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        }
        body = self._body(request, response_id, int(now))
        done_at = now + sim.config.background_seconds if request.background and not request.stream else now
        stored = StoredResponse(
            body,
            output=output,
            usage=usage,
            input_items=request.items,
            created_at=now,
            done_at=done_at,
            context_tokens=input_tokens + output_tokens,
        )
        if request.store:
            self._store.put(response_id, stored)
        headers = limit_headers(admission)
        if request.stream:
            events = _events(stored, deltas, now)
            return await sim.stream(call, events, headers, drop_after)
        if not request.background and not sim.latency.instant:
            await asyncio.sleep(sim.latency.seconds_for(output_tokens))
        return await sim.respond(call, encode(stored.to_json(now)), headers, drop_after)

    def _output(
        self, request: ResponsesRequest, response_id: str, budget: int
    ) -> tuple[list[dict[str, object]], list[str]]:
        """The output items (as they are when done) and the deltas a stream sends for the last one."""
        offset = completion_offset(request.prompt, 0)
        output: list[dict[str, object]] = []
        if request.reasoning_effort is not None:
            output.append({"id": new_id("rs_"), "type": "reasoning", "summary": []})
        as_messages = [
            {"role": "tool"} if i.get("type") == "function_call_output" else {"role": i.get("role")}
            for i in request.items
        ]
        tool = chat.calls_tool(as_messages, request.tools, request.tool_choice)
        if tool is not None:
            arguments = json_text(tool.parameters, seed=offset)
            output.append(
                {
                    "id": new_id("fc_"),
                    "type": "function_call",
                    "status": "completed",
                    "call_id": "call_" + response_id[-24:],
                    "name": tool.name,
                    "arguments": arguments,
                }
            )
            return output, list(pieces(arguments))
        fmt = request.text_format
        if fmt.kind == "json_schema":
            deltas = list(pieces(json_text(fmt.schema or {}, seed=offset)))
        elif fmt.kind == "json_object":
            deltas = list(pieces(json.dumps({"answer": completion_text(offset, budget)}, separators=(",", ":"))))
        else:
            deltas = list(completion_pieces(offset, budget))
        text_part = {"type": "output_text", "text": "".join(deltas), "annotations": [], "logprobs": []}
        output.append(
            {
                "id": new_id("msg_"),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [text_part],
            }
        )
        return output, deltas

    def _body(self, request: ResponsesRequest, response_id: str, created_at: int) -> dict[str, object]:
        fmt: dict[str, object] = {"type": request.text_format.kind}
        if request.text_format.kind == "json_schema":
            fmt.update({"name": "answer", "schema": request.text_format.schema or {}, "strict": True})
        echo = request.echo
        return {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "model": request.model,
            "error": None,
            "incomplete_details": None,
            "instructions": request.instructions,
            "metadata": echo.get("metadata") or {},
            "temperature": echo.get("temperature", 1.0),
            "top_p": echo.get("top_p", 1.0),
            "user": echo.get("user"),
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "truncation": echo.get("truncation", "disabled"),
            "previous_response_id": request.previous_response_id,
            "max_output_tokens": request.max_output_tokens,
            "background": request.background,
            "store": request.store,
            "reasoning": {"effort": request.reasoning_effort, "summary": None},
            "text": {"format": fmt},
            "tool_choice": request.tool_choice
            if request.tool_choice in ("none", "auto", "required")
            else {
                "type": "function",
                "name": request.tool_choice,
            },
            "tools": request.raw_tools,
        }

    def _find(self, call: Call) -> StoredResponse | web.Response:
        response_id = call.request.match_info["response_id"]
        stored = self._store.get(response_id)
        if stored is None:
            return errors.not_found(f"Response with id '{response_id}' not found.", code="not_found")
        return stored

    async def _retrieve(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        stored = self._find(call)
        if isinstance(stored, web.Response):
            return stored
        return await self._sim.respond(call, encode(stored.to_json(self._sim.clock.now())), None, drop_after)

    async def _delete(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        stored = self._find(call)
        if isinstance(stored, web.Response):
            return stored
        response_id = str(stored.body["id"])
        self._store.pop(response_id)
        body = {"id": response_id, "object": "response", "deleted": True}
        return await self._sim.respond(call, encode(body), None, drop_after)

    async def _input_items(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        stored = self._find(call)
        if isinstance(stored, web.Response):
            return stored
        query = call.request.query
        items = list(stored.input_items)
        if query.get("order", "desc") == "desc":
            items.reverse()
        after = query.get("after")
        if after is not None:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 20
        page = items[: max(1, min(limit, 100))]
        body = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page),
        }
        return await self._sim.respond(call, encode(body), None, drop_after)

    async def _cancel(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        stored = self._find(call)
        if isinstance(stored, web.Response):
            return stored
        if stored.body.get("background") is not True:
            return errors.bad_request("Only responses created with background set to true can be cancelled.")
        now = self._sim.clock.now()
        # Cancelling a response that already finished changes nothing; cancelling twice is the same as once.
        if stored.status(now) in ("queued", "in_progress"):
            stored.cancelled = True
        return await self._sim.respond(call, encode(stored.to_json(now)), None, drop_after)


def _nothing(_: object) -> None:
    return None


class _Event(Protocol):
    """Makes one server-sent event of the given type and pacing step, numbering it in sequence."""

    def __call__(self, kind: str, step: int, **fields: object) -> tuple[int, bytes]: ...


def _padding(delta: str) -> str:
    """`obfuscation`: the service pads each delta with random characters so its size does not give the text away."""
    return "x" * (16 - len(delta) % 16)


def _events(stored: StoredResponse, deltas: list[str], now: float) -> Iterator[tuple[int, bytes]]:
    """The typed server-sent events of a streamed response, each with its pacing step and a sequence number."""
    sequence = 0

    def event(kind: str, step: int, **fields: object) -> tuple[int, bytes]:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return step, f"event: {kind}\ndata: ".encode() + encode(data) + b"\n\n"

    started = {**stored.body, "status": "in_progress", "output": []}
    yield event("response.created", 0, response=started)
    yield event("response.in_progress", 0, response=started)
    steps = len(deltas)
    for index, item in enumerate(stored.output):
        last = index == len(stored.output) - 1
        if item["type"] == "message":
            yield from _message_events(event, item, index, deltas if last else [])
        elif item["type"] == "function_call":
            yield event(
                "response.output_item.added",
                0,
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for step, piece in enumerate(deltas, 1):
                yield event(
                    "response.function_call_arguments.delta",
                    step,
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                    obfuscation=_padding(piece),
                )
            yield event(
                "response.function_call_arguments.done",
                steps,
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
            yield event("response.output_item.done", steps, output_index=index, item=item)
        else:
            yield event("response.output_item.added", 0, output_index=index, item=item)
            yield event("response.output_item.done", 0, output_index=index, item=item)
    yield event("response.completed", steps, response=stored.to_json(now))


def _message_events(
    event: _Event, item: Mapping[str, object], index: int, deltas: list[str]
) -> Iterator[tuple[int, bytes]]:
    item_id = item["id"]
    content = item["content"]
    final_part = content[0] if isinstance(content, list) else {}
    steps = len(deltas)
    yield event(
        "response.output_item.added", 0, output_index=index, item={**item, "status": "in_progress", "content": []}
    )
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield event("response.content_part.added", 0, item_id=item_id, output_index=index, content_index=0, part=empty)
    for step, piece in enumerate(deltas, 1):
        yield event(
            "response.output_text.delta",
            step,
            item_id=item_id,
            output_index=index,
            content_index=0,
            delta=piece,
            logprobs=[],
            obfuscation=_padding(piece),
        )
    text = final_part.get("text", "") if isinstance(final_part, dict) else ""
    yield event(
        "response.output_text.done", steps, item_id=item_id, output_index=index, content_index=0, text=text, logprobs=[]
    )
    yield event(
        "response.content_part.done", steps, item_id=item_id, output_index=index, content_index=0, part=final_part
    )
    yield event("response.output_item.done", steps, output_index=index, item=item)
