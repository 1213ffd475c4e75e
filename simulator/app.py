"""The simulator's HTTP face: Azure OpenAI's chat and embeddings routes, and the state they share.

One request goes: read and remember it, check key / api-version / deployment
/ body, ask the fault injector for its plan, apply network faults (down,
hang, slow first byte), answer any 4xx, apply HTTP faults (error, throttle),
charge the deployment's limits, then answer, streamed or not (and perhaps cut
short). The `/_sim` control routes live in `simulator.control`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from typing import TypeVar

from aiohttp import web

from simulator import errors
from simulator.config import Latency, SimulatorConfig
from simulator.contentsafety import add_content_safety_routes
from simulator.control import add_control_routes
from simulator.faults import NO_FAULT, FaultInjector, Faults, Plan
from simulator.limits import Admission, Clock, Limiter, SystemClock
from simulator.requestlog import Received, RequestLog, Stats
from simulator.schema import ChatRequest, EmbeddingRequest, InvalidRequest, is_stream, parse_chat, parse_embeddings
from simulator.text import (
    CONTENT_FILTER_TRIGGER,
    Embedder,
    completion_offset,
    completion_pieces,
    completion_text,
    encode_base64,
    hash_embed,
    last_user_text,
    truncate,
)

FINGERPRINT = "fp_simulator"
REQUEST_ID = web.RequestKey("simulator.request_id", str)
_HANG_POLL_SECONDS = 0.25

Parsed = TypeVar("Parsed", ChatRequest, EmbeddingRequest)


class Call:
    """One API request on its way through: what the log and the stats need to know about how it ended."""

    __slots__ = ("deployment", "operation", "outcome", "request", "request_id")

    def __init__(self, request: web.Request, deployment: str, operation: str) -> None:
        self.request = request
        self.deployment = deployment
        self.operation = operation
        # Also the response's apim-request-id / x-request-id (see `stamp` in create_app).
        self.request_id = request[REQUEST_ID] = str(uuid.uuid4())
        # Set when the answer is not an HTTP status (connection cut, client gone); else the status is used.
        self.outcome: str | None = None


class Simulator:
    """State of one running simulator (faults, latency, limits, request log, stats) and its API handlers.

    Everything runs in the server's event loop; the control methods are plain
    synchronous calls, so code in another thread goes through `SimulatorThread`.
    """

    def __init__(
        self, config: SimulatorConfig, *, clock: Clock | None = None, embedder: Embedder | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.faults = FaultInjector(config.faults)
        self.latency = config.latency
        self.limiter = Limiter({d: config.limits_for(d) for d in config.deployments}, self.clock)
        self._deployments = frozenset(config.deployments)
        self._api_key = config.api_key.encode() if config.api_key is not None else None
        # The hash embedder is microseconds of work; a real model must not block the loop.
        self._embedder: Embedder = embedder or functools.partial(hash_embed, dimensions=config.embedding_dimensions)
        self._embed_in_thread = embedder is not None
        self._log = RequestLog(config.request_log_size)
        self._stats = Stats()
        self._stopping = asyncio.Event()

    # --- control (also reachable over HTTP under /_sim) ---

    def set_faults(self, faults: Faults | None = None, /, *, merge: bool = False, **fields: object) -> Faults:
        """Replace the fault set (or, with merge=True, change only the given fields). Returns the new set."""
        base = faults or (self.faults.current if merge else Faults())
        new = Faults.from_json(fields, base) if fields else base
        self.faults.set(new)
        return new

    def clear_faults(self) -> None:
        self.faults.reset()

    def set_latency(self, *, ttft_ms: float | None = None, tokens_per_second: float | None = None) -> Latency:
        changes = {"ttft_ms": ttft_ms, "tokens_per_second": tokens_per_second}
        self.latency = replace(self.latency, **{k: float(v) for k, v in changes.items() if v is not None})
        return self.latency

    def requests(self, limit: int | None = None) -> list[dict[str, object]]:
        """The remembered requests, oldest first (the last `limit` of them if given), as JSON-ready dicts."""
        return self._log.entries(limit)

    def clear_requests(self) -> None:
        self._log.clear()

    def stats(self) -> dict[str, object]:
        return {"name": self.config.name, **self._stats.to_json()}

    def clear_stats(self) -> None:
        self._stats.clear()

    def reset_limits(self) -> None:
        self.limiter.reset()

    def reset(self) -> None:
        """Back to the configuration the simulator started with: faults, latency, limits, log and stats."""
        self.faults.set(self.config.faults)
        self.latency = self.config.latency
        self.limiter.reset()
        self.clear_requests()
        self.clear_stats()

    def release_hung(self) -> None:
        """Let every hung request go (the server is stopping)."""
        self._stopping.set()

    # --- the API ---

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "ChatCompletions_Create", parse_chat, self._chat)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "Embeddings_Create", parse_embeddings, self._embed)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        request_id = request[REQUEST_ID] = str(uuid.uuid4())
        self._log.add(Received(request, request_id, None, None, self.clock.now())).status = "404"
        self._stats.count(None, "404")
        return errors.resource_not_found()

    async def _serve(
        self,
        request: web.Request,
        operation: str,
        parse: Callable[[object], Parsed],
        run: Callable[[Call, Parsed, int | None], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        call = Call(request, request.match_info["deployment"], operation)
        raw = await request.read()
        body: object = None
        try:
            body = json.loads(raw)
        except ValueError:
            parsed: Parsed | web.Response = self._check(call) or errors.bad_request(
                "We could not parse the JSON body of your request."
            )
        else:
            parsed = self._check(call) or _parse(parse, body)
        received = self._log.add(Received(request, call.request_id, call.deployment, body, self.clock.now()))
        outcome = "cancelled"
        try:
            plan = self.faults.plan(
                call.deployment, stream=is_stream(body), valid=not isinstance(parsed, web.StreamResponse)
            )
            response = await self._answer(call, parsed, plan, run)
            outcome = call.outcome or str(response.status)
            return response
        finally:
            received.status = outcome
            self._stats.count(call.deployment, outcome)

    async def _answer(
        self,
        call: Call,
        parsed: Parsed | web.Response,
        plan: Plan,
        run: Callable[[Call, Parsed, int | None], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if plan is not NO_FAULT:
            if plan.down:
                return self._cut(call, "down")
            if plan.hang:
                await self._hang(call.request)
                return self._cut(call, "hung")
            if plan.delay_ms:
                await asyncio.sleep(plan.delay_ms / 1000)
            if plan.error_status is not None:
                return errors.server_error(plan.error_status)
            if plan.throttle:
                return errors.throttled(plan.retry_ms, reason="requests", operation=call.operation)
        if isinstance(parsed, web.StreamResponse):
            return parsed
        return await run(call, parsed, plan.drop_after)

    def _check(self, call: Call) -> web.Response | None:
        """Key, api-version and deployment, in the order Azure checks them."""
        request = call.request
        if self._api_key is not None and not self._authorised(request):
            return errors.unauthorized()
        if "api-version" not in request.query:
            return errors.resource_not_found()
        if call.deployment not in self._deployments:
            return errors.deployment_not_found(call.deployment)
        return None

    def _authorised(self, request: web.Request) -> bool:
        key = request.headers.get("api-key")
        if key is None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            key = token if scheme.lower() == "bearer" else None
        return key is not None and self._api_key is not None and secrets.compare_digest(key.encode(), self._api_key)

    def _cut(self, call: Call, outcome: str) -> web.StreamResponse:
        """Close the connection without (the rest of) an answer; the client sees a connection error."""
        transport = call.request.transport
        if transport is not None:
            # close(), not abort(): whatever was already written still reaches the client before the FIN.
            transport.close()
        call.outcome = outcome
        # Never sent: aiohttp finds the transport closed and drops it quietly.
        return web.Response(status=503)

    async def _hang(self, request: web.Request) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.hang_limit_seconds
        # Polling the transport notices a client that gave up; the event notices a server that stops.
        while not self._stopping.is_set() and request.transport is not None and not request.transport.is_closing():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(_HANG_POLL_SECONDS, remaining)):
                    await self._stopping.wait()

    def _refused(self, call: Call, admission: Admission) -> web.Response:
        return errors.throttled(
            admission.retry_after_ms,
            reason=admission.reason,
            operation=call.operation,
            headers=_limit_headers(admission),
        )

    async def _chat(self, call: Call, chat: ChatRequest, drop_after: int | None) -> web.StreamResponse:
        prompt = last_user_text(chat.messages)
        if CONTENT_FILTER_TRIGGER in prompt:
            return errors.content_filtered()
        # A cap the caller gave is always reached (finish_reason "length"); without one the model stops on its own.
        tokens = chat.max_tokens or self.config.default_max_tokens
        finish = "length" if chat.max_tokens is not None else "stop"
        admission = self.limiter.admit(call.deployment, chat.prompt_tokens + tokens * chat.n)
        if not admission.allowed:
            return self._refused(call, admission)
        completion_tokens = tokens * chat.n
        usage = {
            "prompt_tokens": chat.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": chat.prompt_tokens + completion_tokens,
        }
        offsets = [completion_offset(prompt, j) for j in range(chat.n)]
        completion_id = "chatcmpl-" + call.request_id.replace("-", "")
        created = int(self.clock.now())
        headers = _limit_headers(admission)
        if chat.stream:
            chunks = _chunks(
                completion_id=completion_id,
                created=created,
                model=call.deployment,
                chat=chat,
                offsets=offsets,
                tokens=tokens,
                finish=finish,
                usage=usage,
            )
            return await self._stream(call, chunks, headers, drop_after)
        latency = self.latency
        if not latency.instant:
            await asyncio.sleep(latency.seconds_for(tokens))
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": call.deployment,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {
                    "index": j,
                    "message": {"role": "assistant", "content": completion_text(offset, tokens)},
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for j, offset in enumerate(offsets)
            ],
            "usage": usage,
        }
        return await self._respond(call, _encode(body), headers, drop_after)

    async def _stream(
        self, call: Call, chunks: Iterator[tuple[int, bytes]], headers: dict[str, str] | None, drop_after: int | None
    ) -> web.StreamResponse:
        latency = self.latency
        if latency.ttft_ms:
            await asyncio.sleep(latency.ttft_ms / 1000)
        response = web.StreamResponse(headers=headers)
        response.content_type = "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        loop = asyncio.get_running_loop()
        interval = 1 / latency.tokens_per_second if latency.tokens_per_second else 0.0
        try:
            await response.prepare(call.request)
            first_token_at = loop.time()
            for sent, (step, chunk) in enumerate(chunks):
                if interval and step > 1:
                    # Paced against the first token, not the previous write, so slow writes do not add up.
                    delay = first_token_at + (step - 1) * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if sent == drop_after:
                    self._cut(call, "dropped")
                    return response
                await response.write(chunk)
        except ConnectionResetError:
            call.outcome = "client_disconnected"
        return response

    async def _respond(
        self, call: Call, body: bytes, headers: dict[str, str] | None, drop_after: int | None
    ) -> web.StreamResponse:
        if drop_after is None:
            return web.Response(body=body, content_type="application/json", headers=headers)
        # Headers and half the promised body, then the cut: the client fails while reading the body.
        response = web.StreamResponse(headers=headers)
        response.content_type = "application/json"
        response.content_length = len(body)
        try:
            await response.prepare(call.request)
            await response.write(body[: len(body) // 2])
        except ConnectionResetError:
            call.outcome = "client_disconnected"
            return response
        self._cut(call, "dropped")
        return response

    async def _embed(self, call: Call, embed: EmbeddingRequest, drop_after: int | None) -> web.StreamResponse:
        admission = self.limiter.admit(call.deployment, embed.prompt_tokens)
        if not admission.allowed:
            return self._refused(call, admission)
        if self._embed_in_thread:
            vectors = await asyncio.to_thread(self._embedder, embed.texts)
        else:
            vectors = self._embedder(embed.texts)
        if embed.dimensions is not None:
            if any(embed.dimensions > len(v) for v in vectors):
                return errors.bad_request(
                    f"This model does not support {embed.dimensions} dimensions.", param="dimensions"
                )
            vectors = [truncate(v, embed.dimensions) for v in vectors]
        if self.latency.ttft_ms:
            await asyncio.sleep(self.latency.ttft_ms / 1000)
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode_base64(v) if embed.base64 else v}
                for i, v in enumerate(vectors)
            ],
            "model": call.deployment,
            "usage": {"prompt_tokens": embed.prompt_tokens, "total_tokens": embed.prompt_tokens},
        }
        return await self._respond(call, _encode(body), _limit_headers(admission), drop_after)


def _encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _parse(parse: Callable[[object], Parsed], body: object) -> Parsed | web.Response:
    try:
        return parse(body)
    except InvalidRequest as exc:
        return errors.bad_request(exc.message, exc.param)


def _limit_headers(admission: Admission) -> dict[str, str] | None:
    if admission.remaining_tokens is None and admission.remaining_requests is None:
        return None
    headers = {}
    if admission.remaining_tokens is not None:
        headers["x-ratelimit-remaining-tokens"] = str(admission.remaining_tokens)
    if admission.remaining_requests is not None:
        headers["x-ratelimit-remaining-requests"] = str(admission.remaining_requests)
    return headers


def _chunks(
    *,
    completion_id: str,
    created: int,
    model: str,
    chat: ChatRequest,
    offsets: list[int],
    tokens: int,
    finish: str,
    usage: Mapping[str, int],
) -> Iterator[tuple[int, bytes]]:
    """Server-sent events of a streamed completion, each with its pacing step (0 = role, k = k-th token)."""
    head: dict[str, object] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }
    if chat.include_usage:
        # OpenAI sends an explicit null on every chunk but the last when usage is asked for.
        head["usage"] = None

    def event(index: int, delta: Mapping[str, str], finish_reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return b"data: " + _encode({**head, "choices": [choice]}) + b"\n\n"

    for index in range(len(offsets)):
        yield 0, event(index, {"role": "assistant", "content": ""})
    pieces = [completion_pieces(offset, tokens) for offset in offsets]
    for step in range(tokens):
        for index, choice_pieces in enumerate(pieces):
            yield step + 1, event(index, {"content": choice_pieces[step]})
    for index in range(len(offsets)):
        yield tokens, event(index, {}, finish)
    if chat.include_usage:
        yield tokens, b"data: " + _encode({**head, "choices": [], "usage": usage}) + b"\n\n"
    yield tokens, b"data: [DONE]\n\n"


SIMULATOR = web.AppKey("simulator", Simulator)


def create_app(
    config: SimulatorConfig, *, clock: Clock | None = None, embedder: Embedder | None = None
) -> web.Application:
    """The simulator as an aiohttp application; its state is `app[SIMULATOR]`."""
    sim = Simulator(config, clock=clock, embedder=embedder)
    app = web.Application()
    app[SIMULATOR] = sim
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", sim.chat_completions)
    app.router.add_post("/openai/deployments/{deployment}/embeddings", sim.embeddings)
    add_control_routes(app, sim)
    add_content_safety_routes(app, config.api_key)
    app.router.add_route("*", "/{tail:.*}", sim.not_found)
    region = config.region

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer, errors and aiohttp's own included, carries the ids and region Azure sends.
        request_id = request.get(REQUEST_ID) or str(uuid.uuid4())
        response.headers["apim-request-id"] = request_id
        response.headers["x-request-id"] = request_id
        response.headers["x-ms-region"] = region
        deployment = request.match_info.get("deployment")
        if deployment in config.deployments:
            response.headers["x-ms-deployment-name"] = deployment

    async def release(_: web.Application) -> None:
        sim.release_hung()

    app.on_response_prepare.append(stamp)
    app.on_shutdown.append(release)
    return app
