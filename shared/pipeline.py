"""The order of the stages, and nothing else:
auth -> limits -> cache lookup -> content safety -> route -> proxy/stream -> meter (audit log) -> cache store.

Content safety runs after the cache lookup (a hit is an answer already given
to a prompt that passed, and costs no Content Safety call) and before any
backend is chosen, so a blocked prompt never reaches one.

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
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from shared import api
from shared.errors import (
    BackendsThrottled,
    ContentFiltered,
    Forbidden,
    GatewayError,
    GatewayOverloaded,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    error_response,
)
from shared.gateway import Gateway
from shared.limits.estimate import estimate_call
from shared.limits.limiter import Admission
from shared.limits.users import with_end_user
from shared.logs import request_id_var
from shared.meter import SentContent, prompt_of
from shared.models import GatewayRequest, GatewayResponse, Usage
from shared.outcomes import Outcome, RequestRecord
from shared.promptlog.transcript import StreamTranscript
from shared.proxy import Attempt, BackendCall, Exhausted, RelayedStream

if TYPE_CHECKING:
    from shared.cache.recorder import StreamRecorder

log = logging.getLogger("gateway.pipeline")


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
    return Usage.from_json(usage)


def _attempts(tried: tuple[Attempt, ...]) -> list[tuple[str, str, float]]:
    return [(a.backend, a.outcome, a.seconds) for a in tried]


def _outcome_of(exc: GatewayError) -> Outcome:
    if isinstance(exc, ContentFiltered):
        return Outcome.CONTENT_FILTERED
    if isinstance(exc, QuotaExceeded):
        return Outcome.QUOTA_EXCEEDED
    if isinstance(exc, RateLimited):
        return Outcome.THROTTLED
    if isinstance(exc, Unauthorized):
        return Outcome.UNAUTHORIZED
    if isinstance(exc, GatewayOverloaded):
        return Outcome.OVERLOADED
    if exc.status >= 500 or isinstance(exc, BackendsThrottled):
        return Outcome.BACKEND_ERROR
    return Outcome.CLIENT_ERROR


async def handle(gw: Gateway, request: GatewayRequest) -> GatewayResponse:
    request_id_var.set(request.request_id)
    started = time.perf_counter()
    trace = gw.telemetry.start(request)
    record = RequestRecord(request.request_id, operation="unknown", trace=trace)
    admission: Admission | None = None
    try:
        operation, deployment = api.route(request)
        record.operation = operation.value
        with trace.stage("auth"):
            caller = with_end_user(await gw.authenticator.authenticate(request.headers), request)
        record.caller = caller
        call = api.parse(request, operation, deployment, gw.settings.max_body_bytes)
        record.deployment, record.streamed = call.deployment, call.stream
        if gw.settings.log_prompts:
            record.prompt = prompt_of(call.body)
        if caller.logs_prompts(call.deployment):
            record.request_body = call.body  # the audit log's; masked and written off the request's path
        if not gw.router.knows(call.deployment):
            raise NotFound(f"The deployment '{call.deployment}' does not exist.", code="DeploymentNotFound")
        if not caller.may_use(call.deployment):
            raise Forbidden(
                f"This subscription may not use the deployment '{call.deployment}'.",
                code="deployment_not_allowed",
            )
        with trace.stage("limits"):
            await gw.budgets.check(caller)
            admission = await gw.limiter.admit(caller, call)
        with trace.stage("cache"):
            lookup = await gw.cache.lookup(caller, call, request.headers) if gw.cache is not None else None
        if lookup is not None:
            record.cache = lookup.state  # counted even when the backend then fails
            record.cache_check = lookup.check
        if lookup is not None and lookup.hit and gw.cache is not None:
            # Counted as a request (RPM) but settled with no tokens (TPM): nothing reached a backend.
            record.status, record.outcome = 200, Outcome.CACHE_HIT
            record.tokens_saved = lookup.tokens_saved
            if record.request_body is not None and lookup.entry is not None:
                record.completion = _answer(lookup.entry.response)
            record.seconds = time.perf_counter() - started
            await gw.meter.finish(record, admission)
            return gw.cache.respond(lookup, call, {**admission.headers, "x-request-id": request.request_id})
        if gw.content_safety is not None and gw.content_safety.applies(caller.subscription_id, call.deployment):
            with trace.stage("content_safety"):
                await gw.content_safety.check(call.deployment, call.body)
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
        )
        record.attempts = _attempts(result.attempts)
        if record.abandoned and not admission.prompt_estimate:
            # Their cost is the prompt, counted now since admission did not need it; off the loop, as the
            # tokenizer may load for the first time here.
            record.prompt_estimate = (await asyncio.to_thread(estimate_call, call, 0)).prompt
        if isinstance(result, Exhausted):
            raise result.error
    except GatewayError as exc:
        record.status, record.outcome, record.error = exc.status, _outcome_of(exc), exc.code
        if record.request_body is not None:
            record.completion = exc.envelope()
        record.seconds = time.perf_counter() - started
        await gw.meter.finish(record, admission)
        return error_response(exc, request.request_id, admission.headers if admission else None)

    record.backend, record.region = result.backend, result.region
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
        if record.request_body is not None:
            record.completion = answer or _answer(result.body) or result.body.decode(errors="replace")
        record.backend_seconds = result.backend_seconds
        record.seconds = time.perf_counter() - started
        await gw.meter.finish(record, admission)
        if gw.cache is not None and lookup is not None:
            gw.cache.save(lookup, result.status, result.body, answer)
        return GatewayResponse(result.status, headers, result.body)
    headers["cache-control"] = "no-cache"
    recorder = gw.cache.recorder(lookup) if gw.cache is not None else None
    transcript = StreamTranscript(gw.settings.prompt_log.max_record_bytes) if record.request_body is not None else None
    record.ready_seconds = time.perf_counter() - started  # the first event is here: the rest is the backend's pace
    record.backend_seconds = result.backend_seconds
    gw.stream_opened(result.stream)
    stream = _metered(gw, result.stream, record, admission, started, recorder=recorder, transcript=transcript)
    return GatewayResponse(200, headers, stream=stream)


async def _metered(
    gw: Gateway,
    stream: RelayedStream,
    record: RequestRecord,
    admission: Admission,
    started: float,
    *,
    recorder: StreamRecorder | None = None,
    transcript: StreamTranscript | None = None,
) -> AsyncIterator[bytes]:
    finished = False
    sent = SentContent()
    try:
        with record.trace.stage("stream"):
            async for chunk in stream:
                if recorder is not None:
                    recorder.feed(chunk)
                yield chunk
                sent.feed(chunk)  # after the yield: only what reached the caller
                if transcript is not None:
                    transcript.feed(chunk)  # after the caller has the chunk: the audit log never delays it
        finished = True
        if recorder is not None:
            ended = await stream.finish()
            if ended.completed and not ended.error:
                recorder.complete(ended.usage)
    finally:
        # Close and settle in a task the gateway owns: a disconnected client's task may be cancelled
        # again at any await, the backend connection must be closed all the same, and a gateway
        # shutting down waits for these before it flushes the ledger.
        if transcript is not None:
            record.completion = transcript.result()
        gw.spawn(_end_stream(gw, stream, record, admission, started, finished=finished, sent=sent))


async def _end_stream(
    gw: Gateway,
    stream: RelayedStream,
    record: RequestRecord,
    admission: Admission,
    started: float,
    *,
    finished: bool,
    sent: SentContent,
) -> None:
    ended = await stream.finish()
    gw.stream_settled(stream)
    record.usage = ended.usage
    if record.usage is None:
        # Cut before the usage chunk: charge what was really sent, the prompt (estimated) and the content
        # tokens that reached the caller, rather than refunding a stream that was used.
        record.usage = Usage(admission.prompt_estimate, sent.tokens())
    record.seconds = time.perf_counter() - started
    if ended.error:
        record.outcome, record.error = Outcome.BACKEND_ERROR, ended.error
    elif not finished:
        record.outcome, record.error = Outcome.CLIENT_ERROR, "client disconnected"
    await gw.meter.finish(record, admission)
