"""The simulator's HTTP face: Azure OpenAI's routes, the request pipeline they share, chat and embeddings.

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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from simulator import chat, errors
from simulator.batches import BatchesApi
from simulator.completions import CompletionsApi
from simulator.config import Latency, SimulatorConfig
from simulator.contentsafety import add_content_safety_routes
from simulator.control import add_control_routes
from simulator.faults import NO_FAULT, FaultInjector, Faults, Plan
from simulator.files import FilesApi
from simulator.limits import Admission, Clock, Limiter, SystemClock, limit_headers
from simulator.media import MediaApi
from simulator.request import (
    DEPLOYMENT,
    REQUEST_ID,
    V1_VERSIONS,
    BodyError,
    Call,
    Endpoint,
    encode,
    loggable,
    read_body,
)
from simulator.requestlog import Received, RequestLog, Stats
from simulator.responses import ResponsesApi
from simulator.schema import ChatRequest, EmbeddingRequest, InvalidRequest, is_stream, parse_chat, parse_embeddings
from simulator.text import CONTENT_FILTER_TRIGGER, Embedder, encode_base64, hash_embed, last_user_text, truncate

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

_HANG_POLL_SECONDS = 0.25

Parsed = TypeVar("Parsed")

CHAT = Endpoint("ChatCompletions_Create")
EMBEDDINGS = Endpoint("Embeddings_Create")


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
        self.responses = ResponsesApi(self)
        self.files = FilesApi(self)
        self.batches = BatchesApi(self, self.files)
        self.media = MediaApi(self)
        self.completions = CompletionsApi(self)
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
        self.clear_objects()

    def clear_objects(self) -> None:
        """Forget every stored response, file, batch and image."""
        for api in (self.responses, self.files, self.batches, self.media):
            api.clear()

    def release_hung(self) -> None:
        """Let every hung request go (the server is stopping)."""
        self._stopping.set()

    # --- the API ---

    def handler(
        self,
        endpoint: Endpoint,
        parse: Callable[[object], Parsed],
        run: Callable[[Call, Parsed, int | None], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """An aiohttp handler for one operation: `parse` turns the body into a request value, `run` answers it."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, endpoint, parse, run)

        return handle

    def routes(self) -> list[tuple[str, str, Handler]]:
        """Every API route, in the deployment-scoped / api-version shape and the v1 shape where Azure has both."""
        deployment, v1, versioned = "/openai/deployments/{deployment}", "/openai/v1", "/openai"
        made: list[tuple[str, str, Handler]] = []
        for prefix, is_v1 in ((deployment, False), (v1, True)):
            chat_endpoint, embed_endpoint = (CHAT.with_v1(), EMBEDDINGS.with_v1()) if is_v1 else (CHAT, EMBEDDINGS)
            made.append(("POST", prefix + "/chat/completions", self.handler(chat_endpoint, parse_chat, self._chat)))
            made.append(("POST", prefix + "/embeddings", self.handler(embed_endpoint, parse_embeddings, self._embed)))
        for deployed in (self.completions, self.media):
            made += deployed.routes(deployment, v1=False) + deployed.routes(v1, v1=True)
        for api in (self.responses, self.files, self.batches):
            made += api.routes(versioned, v1=False) + api.routes(v1, v1=True)
        made.append(("GET", "/_sim/blobs/{blob_id}", self.media.blob))
        return made

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        request_id = request[REQUEST_ID] = str(uuid.uuid4())
        self._log.add(Received(request, request_id, None, None, self.clock.now())).status = "404"
        self._stats.count(None, "404")
        return errors.resource_not_found()

    async def _serve(
        self,
        request: web.Request,
        endpoint: Endpoint,
        parse: Callable[[object], Parsed],
        run: Callable[[Call, Parsed, int | None], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        call = Call(request, endpoint, request.match_info.get("deployment"))
        body: object = None
        unreadable: web.Response | None = None
        try:
            body = await read_body(request, endpoint.body, self.config.max_upload_bytes)
        except BodyError as exc:
            unreadable = errors.bad_request(str(exc)) if exc.status == 400 else errors.too_large(str(exc))
        if endpoint.deployment == "body" and isinstance(body, dict) and isinstance(body.get("model"), str):
            call.deployment = body["model"]
        if call.deployment is not None:
            request[DEPLOYMENT] = call.deployment
        # Azure's order: key, api-version, a deployment in the path, the body, a deployment named in the body.
        refusal = self._check(call) or unreadable or self._check_body_deployment(call) or _unencodable(body)
        parsed: Parsed | web.Response = refusal if refusal is not None else _parse(parse, body)
        received = self._log.add(Received(request, call.request_id, call.deployment, loggable(body), self.clock.now()))
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
                return errors.throttled(
                    plan.retry_ms, reason="requests", operation=call.operation, api_version=_api_version(call)
                )
        if isinstance(parsed, web.StreamResponse):
            return parsed
        return await run(call, parsed, plan.drop_after)

    def _check(self, call: Call) -> web.Response | None:
        """Key, api-version and a deployment named in the path, in the order Azure checks them."""
        request = call.request
        if self._api_key is not None and not self._authorised(request):
            return errors.unauthorized()
        version = request.query.get("api-version")
        if call.endpoint.v1:
            if version is not None and version not in V1_VERSIONS:
                return errors.bad_request(f"API version {version} is not supported on the v1 routes.", "api-version")
        elif version is None:
            return errors.resource_not_found()
        if call.endpoint.deployment == "path" and call.deployment not in self._deployments:
            return errors.deployment_not_found(str(call.deployment))
        return None

    def _check_body_deployment(self, call: Call) -> web.Response | None:
        if call.endpoint.deployment != "body":
            return None
        if call.deployment is None:
            return errors.bad_request("The 'model' field names the deployment and is required.", "model")
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

    def refused(self, call: Call, admission: Admission) -> web.Response:
        """The 429 for a request the deployment's limits refuse."""
        return errors.throttled(
            admission.retry_after_ms,
            reason=admission.reason,
            operation=call.operation,
            headers=limit_headers(admission),
            api_version=_api_version(call),
        )

    async def _chat(self, call: Call, request: ChatRequest, drop_after: int | None) -> web.StreamResponse:
        if CONTENT_FILTER_TRIGGER in last_user_text(request.messages):
            return errors.content_filtered()
        # Charged like Azure's estimate: the prompt plus the completion the request may produce.
        tokens = request.max_tokens or self.config.default_max_tokens
        admission = self.limiter.admit(str(call.deployment), request.prompt_tokens + tokens * request.n)
        if not admission.allowed:
            return self.refused(call, admission)
        completion_id = "chatcmpl-" + call.request_id.replace("-", "")
        made = chat.answers(request, request_key=completion_id, default_tokens=self.config.default_max_tokens)
        usage = chat.usage(request, made)
        created = int(self.clock.now())
        headers = limit_headers(admission)
        if request.stream:
            chunks = chat.stream_chunks(
                completion_id=completion_id,
                created=created,
                model=str(call.deployment),
                made=made,
                usage=usage,
                include_usage=request.include_usage,
                filter_results=self.config.stream_filter_results,
            )
            return await self.stream(call, chunks, headers, drop_after)
        latency = self.latency
        if not latency.instant:
            await asyncio.sleep(latency.seconds_for(max(len(a.pieces) for a in made)))
        body = chat.completion_body(
            completion_id=completion_id, created=created, model=str(call.deployment), made=made, usage=usage
        )
        return await self.respond(call, encode(body), headers, drop_after)

    async def stream(
        self, call: Call, chunks: Iterator[tuple[int, bytes]], headers: dict[str, str] | None, drop_after: int | None
    ) -> web.StreamResponse:
        """Server-sent events, paced by latency (each chunk carries its token step) and cut by `drop_after`."""
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

    async def respond(
        self,
        call: Call,
        body: bytes,
        headers: dict[str, str] | None,
        drop_after: int | None,
        content_type: str = "application/json",
    ) -> web.StreamResponse:
        """A whole answer at once, or (with `drop_after`) its headers and half its body before the cut."""
        if drop_after is None:
            return web.Response(body=body, content_type=content_type, headers=headers)
        # Headers and half the promised body, then the cut: the client fails while reading the body.
        response = web.StreamResponse(headers=headers)
        response.content_type = content_type
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
        admission = self.limiter.admit(str(call.deployment), embed.prompt_tokens)
        if not admission.allowed:
            return self.refused(call, admission)
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
            "model": str(call.deployment),
            "usage": {"prompt_tokens": embed.prompt_tokens, "total_tokens": embed.prompt_tokens},
        }
        return await self.respond(call, encode(body), limit_headers(admission), drop_after)


def _unencodable(body: object) -> web.Response | None:
    """Azure answers a body holding a string it cannot encode (a lone surrogate, `"\\ud800"`) with a plain 500."""
    try:
        json.dumps(body, ensure_ascii=False, default=str).encode()  # default: multipart uploads
    except UnicodeEncodeError:
        return errors.server_error(500, "The server had an error while processing your request. Sorry about that!")
    return None


def _parse(parse: Callable[[object], Parsed], body: object) -> Parsed | web.Response:
    try:
        return parse(body)
    except InvalidRequest as exc:
        return errors.bad_request(exc.message, exc.param)


def _api_version(call: Call) -> str | None:
    return call.request.query.get("api-version")


SIMULATOR = web.AppKey("simulator", Simulator)


def create_app(
    config: SimulatorConfig, *, clock: Clock | None = None, embedder: Embedder | None = None
) -> web.Application:
    """The simulator as an aiohttp application; its state is `app[SIMULATOR]`."""
    sim = Simulator(config, clock=clock, embedder=embedder)
    # Uploads (audio, images, batch files) are far larger than aiohttp's 1 MB default.
    app = web.Application(client_max_size=config.max_upload_bytes)
    app[SIMULATOR] = sim
    for method, path, handler in sim.routes():
        app.router.add_route(method, path, handler)
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
        deployment = request.get(DEPLOYMENT)
        if deployment in config.deployments:
            response.headers["x-ms-deployment-name"] = deployment

    async def release(_: web.Application) -> None:
        sim.release_hung()

    app.on_response_prepare.append(stamp)
    app.on_shutdown.append(release)
    return app
