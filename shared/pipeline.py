"""The order of the stages, and nothing else: auth -> limits -> cache -> route -> proxy/stream -> meter -> cache store.

`handle` takes the gateway's own request and returns the gateway's own
response; every failure becomes an OpenAI error envelope here, and every
request that ends is metered exactly once (streams: when the stream ends,
however it ends).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from shared import api
from shared.errors import (
    BackendsThrottled,
    Forbidden,
    GatewayError,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from shared.gateway import Gateway
from shared.logs import request_id_var
from shared.meter import Outcome, RequestRecord, prompt_of
from shared.models import GatewayRequest, GatewayResponse, Usage
from shared.proxy import Attempt, BackendCall, ProxyResult
from shared.ratelimit import Admission

if TYPE_CHECKING:
    from shared.cache.recorder import StreamRecorder

log = logging.getLogger("gateway.pipeline")

_background: set[asyncio.Task[None]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    """Run work that must finish even if the caller's task is cancelled (a client that went away)."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _answer(body: bytes) -> dict[str, Any] | None:
    """A backend's unary answer as JSON, parsed once for the meter and the cache."""
    try:
        answer = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return answer if isinstance(answer, dict) else None


def _usage_of(answer: dict[str, Any] | None) -> Usage | None:
    usage = answer.get("usage") if answer is not None else None
    if not isinstance(usage, dict):
        return None
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _attempts(tried: list[Attempt]) -> list[tuple[str, str, float]]:
    return [(a.backend, a.outcome, a.seconds) for a in tried]


def _outcome_of(exc: GatewayError) -> Outcome:
    if isinstance(exc, QuotaExceeded):
        return Outcome.QUOTA_EXCEEDED
    if isinstance(exc, RateLimited):
        return Outcome.THROTTLED
    if isinstance(exc, Unauthorized):
        return Outcome.UNAUTHORIZED
    if exc.status >= 500 or isinstance(exc, BackendsThrottled):
        return Outcome.BACKEND_ERROR
    return Outcome.CLIENT_ERROR


def error_response(exc: GatewayError, request_id: str, extra: dict[str, str] | None = None) -> GatewayResponse:
    headers = {"content-type": "application/json", "x-request-id": request_id, **(extra or {}), **exc.headers}
    return GatewayResponse(exc.status, headers, exc.body())


async def handle(gw: Gateway, request: GatewayRequest) -> GatewayResponse:
    request_id_var.set(request.request_id)
    started = time.perf_counter()
    trace = gw.telemetry.start(request)
    record = RequestRecord(request.request_id, operation="unknown", trace=trace)
    admission: Admission | None = None
    tried: list[Attempt] = []
    try:
        operation, deployment = api.route(request)
        record.operation = operation.value
        with trace.stage("auth"):
            caller = await gw.authenticator.authenticate(request.headers)
        record.caller = caller
        call = api.parse(request, operation, deployment, gw.settings.max_body_bytes)
        record.deployment, record.streamed = call.deployment, call.stream
        if gw.settings.log_prompts:
            record.prompt = prompt_of(call.body)
        if not gw.router.knows(call.deployment):
            raise NotFound(f"The deployment '{call.deployment}' does not exist.", code="DeploymentNotFound")
        if not caller.may_use(call.deployment):
            raise Forbidden(
                f"This subscription may not use the deployment '{call.deployment}'.",
                code="deployment_not_allowed",
            )
        with trace.stage("limits"):
            admission = await gw.limiter.admit(caller, call)
        with trace.stage("cache"):
            lookup = await gw.cache.lookup(caller, call, request.headers) if gw.cache is not None else None
        if lookup is not None:
            record.cache = lookup.state  # counted even when the backend then fails
        if lookup is not None and lookup.hit and gw.cache is not None:
            # Counted as a request (RPM) but settled with no tokens (TPM): nothing reached a backend.
            record.status, record.outcome = 200, Outcome.CACHE_HIT
            record.tokens_saved = lookup.tokens_saved
            record.seconds = time.perf_counter() - started
            await gw.meter.finish(record, admission)
            return gw.cache.respond(lookup, call, {**admission.headers, "x-request-id": request.request_id})
        result = await gw.proxy.forward(
            BackendCall(
                deployment=call.deployment,
                operation=operation.value,
                body=api.with_usage_requested(call.body) if call.stream else request.body,
                stream=call.stream,
                strip_usage_chunk=call.stream and not api.wants_usage(call.body),
                request_id=request.request_id,
                api_version=call.api_version,
                client_headers=request.headers,
            ),
            tried,
        )
    except GatewayError as exc:
        record.status, record.outcome, record.error = exc.status, _outcome_of(exc), exc.code
        record.attempts = _attempts(tried)
        record.seconds = time.perf_counter() - started
        await gw.meter.finish(record, admission)
        return error_response(exc, request.request_id, admission.headers if admission else None)

    record.backend, record.region = result.backend, result.region
    record.attempts = _attempts(tried)
    record.status = result.status
    headers = {
        **result.headers,
        **admission.headers,
        "x-request-id": request.request_id,
        "x-gateway-backend": result.backend,
    }
    if lookup is not None:
        headers.update(lookup.headers)
    if result.stream is None:
        answer = _answer(result.body) if result.status == 200 else None
        record.usage = _usage_of(answer)
        record.outcome = Outcome.SUCCESS if result.status < 400 else Outcome.CLIENT_ERROR
        record.backend_seconds = result.backend_seconds
        record.seconds = time.perf_counter() - started
        await gw.meter.finish(record, admission)
        if gw.cache is not None and lookup is not None:
            gw.cache.save(lookup, result.status, result.body, answer)
        return GatewayResponse(result.status, headers, result.body)
    headers["cache-control"] = "no-cache"
    recorder = gw.cache.recorder(lookup) if gw.cache is not None else None
    record.ready_seconds = time.perf_counter() - started  # the first event is here: the rest is the backend's pace
    return GatewayResponse(200, headers, stream=_metered(gw, result, record, admission, started, recorder=recorder))


async def _metered(
    gw: Gateway,
    result: ProxyResult,
    record: RequestRecord,
    admission: Admission,
    started: float,
    *,
    recorder: StreamRecorder | None = None,
) -> AsyncIterator[bytes]:
    stream = result.stream
    if stream is None:
        return
    finished = False
    try:
        with record.trace.stage("stream"):
            async for chunk in stream:
                if recorder is not None:
                    recorder.feed(chunk)
                yield chunk
        finished = True
        if recorder is not None and result.stream_completed and not result.stream_error:
            recorder.complete(result.usage)
    finally:
        # Close and settle in a task of its own: a disconnected client's task may be cancelled
        # again at any await, and the backend connection must be closed all the same.
        _spawn(_end_stream(gw, result, record, admission, started, finished=finished))


async def _end_stream(
    gw: Gateway,
    result: ProxyResult,
    record: RequestRecord,
    admission: Admission,
    started: float,
    *,
    finished: bool,
) -> None:
    if result.stream is not None and hasattr(result.stream, "aclose"):
        await result.stream.aclose()
    record.usage = result.usage
    if record.usage is None:
        # Cut before the usage chunk: charge what was really sent, the prompt (estimated) and one token
        # per content event that reached the caller, rather than refunding a stream that was used.
        record.usage = Usage(admission.prompt_estimate, result.stream_events)
    record.seconds = time.perf_counter() - started
    record.backend_seconds = result.backend_seconds
    if result.stream_error:
        record.outcome, record.error = Outcome.BACKEND_ERROR, result.stream_error
    elif not finished:
        record.outcome, record.error = Outcome.CLIENT_ERROR, "client disconnected"
    await gw.meter.finish(record, admission)
