"""Legacy completions (`/completions`, `text_completion`): lorem text per prompt, streamed or not.

The same words a chat completion would say for that prompt, so a cache or a
gateway sees the same determinism; each prompt (a string, or each string of
a list) gets `n` choices, indexed prompt by prompt as the service does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from simulator import contentfilter, errors
from simulator.chat import FINGERPRINT
from simulator.limits import limit_headers
from simulator.request import Call, Endpoint, encode
from simulator.schema import MAX_CHOICES, InvalidRequest
from simulator.text import CONTENT_FILTER_TRIGGER, TOKENS_PER_REPLY, completion_offset, completion_pieces

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from simulator.app import Simulator

COMPLETIONS = Endpoint("Completions_Create")


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    prompts: tuple[str, ...]
    max_tokens: int | None
    n: int
    stream: bool

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p.split()) for p in self.prompts) + TOKENS_PER_REPLY


def parse_completion(body: object) -> CompletionRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    raw = body.get("prompt", "")
    prompts = (raw,) if isinstance(raw, str) else tuple(raw) if isinstance(raw, list) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InvalidRequest("'prompt' must be a string or a non-empty array of strings.", "prompt")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise InvalidRequest("'max_tokens' must be a positive integer.", "max_tokens")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
        raise InvalidRequest(f"'n' must be an integer between 1 and {MAX_CHOICES}.", "n")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", "stream")
    return CompletionRequest(prompts, max_tokens, n, stream is True)


class CompletionsApi:
    __slots__ = ("_sim",)

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def routes(self, prefix: str, v1: bool) -> list[tuple[str, str, Handler]]:
        endpoint = COMPLETIONS.with_v1() if v1 else COMPLETIONS
        return [("POST", f"{prefix}/completions", self._sim.handler(endpoint, parse_completion, self._complete))]

    async def _complete(self, call: Call, request: CompletionRequest, drop_after: int | None) -> web.StreamResponse:
        sim = self._sim
        if any(CONTENT_FILTER_TRIGGER in p for p in request.prompts):
            return errors.content_filtered()
        tokens = request.max_tokens or sim.config.default_max_tokens
        count = len(request.prompts) * request.n
        admission = sim.limiter.admit(str(call.deployment), request.prompt_tokens + tokens * count)
        if not admission.allowed:
            return sim.refused(call, admission)
        # Choice k answers prompt k // n, as the service orders them.
        pieces = [
            completion_pieces(completion_offset(prompt, j), tokens)
            for prompt in request.prompts
            for j in range(request.n)
        ]
        finish = "length" if request.max_tokens is not None else "stop"
        head = {
            "id": "cmpl-" + call.request_id.replace("-", ""),
            "object": "text_completion",
            "created": int(sim.clock.now()),
            "model": str(call.deployment),
            "system_fingerprint": FINGERPRINT,
        }
        usage = {
            "prompt_tokens": request.prompt_tokens,
            "completion_tokens": tokens * count,
            "total_tokens": request.prompt_tokens + tokens * count,
        }
        if request.stream:
            return await sim.stream(call, _chunks(head, pieces, finish), limit_headers(admission), drop_after)
        body = {
            **head,
            "prompt_filter_results": [
                {"prompt_index": i, "content_filter_results": contentfilter.prompt_results()}
                for i in range(len(request.prompts))
            ],
            "choices": [
                {
                    "text": "".join(choice),
                    "index": index,
                    "logprobs": None,
                    "finish_reason": finish,
                    "content_filter_results": contentfilter.choice_results(),
                }
                for index, choice in enumerate(pieces)
            ],
            "usage": usage,
        }
        return await sim.respond(call, encode(body), limit_headers(admission), drop_after)


def _chunks(head: dict[str, object], pieces: list[tuple[str, ...]], finish: str) -> Iterator[tuple[int, bytes]]:
    """A streamed completion: every chunk has the non-streamed shape, one piece of text per choice."""

    def chunk(index: int, text: str, finish_reason: str | None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}
        return b"data: " + json.dumps({**head, "choices": [choice]}, separators=(",", ":")).encode() + b"\n\n"

    steps = max(len(p) for p in pieces)
    for step in range(steps):
        for index, choice in enumerate(pieces):
            if step < len(choice):
                yield step + 1, chunk(index, choice[step], None)
    for index in range(len(pieces)):
        yield steps, chunk(index, "", finish)
    yield steps, b"data: [DONE]\n\n"
