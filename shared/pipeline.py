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

from shared import api, lateusage, surface
from shared.affinity import Placement, created_id, place, produced_files
from shared.errors import (
    BackendsThrottled,
    ContentFiltered,
    Forbidden,
    GatewayError,
    GatewayOverloaded,
    NotFound,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    StoreUnavailable,
    Unauthorized,
    error_response,
    retry_after_headers,
    storage_unavailable,
)
from shared.gateway import Gateway
from shared.limits.estimate import estimate_call
from shared.limits.limiter import Admission
from shared.limits.users import with_end_user
from shared.logs import clip, request_id_var
from shared.meter import SentContent, prompt_of
from shared.models import DEFAULT_API_VERSION, Caller, GatewayRequest, GatewayResponse, Operation, Usage
from shared.outcomes import Outcome, RequestRecord
from shared.promptlog.transcript import StreamTranscript
from shared.proxy import Attempt, BackendCall, Exhausted, ProxyResult
from shared.relay import RelayedStream
from shared.routing import ACCOUNT
from shared.surface import FILES_AND_BATCHES, FORWARD_QUERY, LISTS, METERED, Body, Relay, Route

if TYPE_CHECKING:
    from shared.cache.recorder import StreamRecorder

log = logging.getLogger("gateway.pipeline")


def _answer(body: bytes, content_type: str = "application/json") -> dict[str, Any] | None:
    """A backend's unary answer as JSON, parsed once for the meter and the cache (other content is not read)."""
    if "json" not in content_type:
        return None
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
        route = surface.route(request)
        operation = route.operation
        record.operation = operation.value
        with trace.stage("auth"):
            caller = with_end_user(await gw.authenticator.authenticate(request.headers), request)
        record.caller = caller
        limit = surface.body_limit(route.spec, gw.settings)
        if operation in (Operation.CHAT, Operation.EMBEDDINGS):
            call = api.parse(request, operation, route.deployment, limit)
        else:
            call = surface.parse(request, route, limit)
        streamed = call.stream or route.spec.relay is Relay.BINARY
        record.deployment, record.streamed = call.deployment or None, streamed
        if gw.settings.log_prompts and route.spec.body is Body.JSON:
            record.prompt = prompt_of(call.body)
        if call.deployment and route.spec.body is Body.JSON and caller.logs_prompts(call.deployment):
            record.request_body = call.body  # the audit log's; masked and written off the request's path
        if call.deployment:
            _check_deployment(gw, caller, call.deployment)
        elif caller.allowed_deployments and operation in FILES_AND_BATCHES:
            # A batch's input file names its deployments line by line, unread by the gateway: only a
            # subscription that may use every deployment may use files and batches.
            raise Forbidden(
                "This subscription is limited to some deployments, so it may not use files or batches.",
                code="deployment_not_allowed",
            )
        with trace.stage("route"):
            placement = await place(gw.affinity, gw.router, caller, route, call)
        if placement.pin is not None and placement.pin.deployment and not call.deployment:
            record.deployment = placement.pin.deployment
            _check_deployment(gw, caller, placement.pin.deployment)
        with trace.stage("limits"):
            await gw.budgets.check(caller)
            admission = await gw.limiter.admit(caller, call)
        if operation in LISTS:
            return await _list_everywhere(gw, request, route, record=record, admission=admission, started=started)
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
        chat_stream = call.stream and operation is Operation.CHAT
        result = await gw.proxy.forward(
            _backend_call(request, route, call, placement, streamed=streamed, chat_stream=chat_stream)
        )
        record.attempts = _attempts(result.attempts)
        if record.abandoned and not admission.prompt_estimate:
            # Their cost is the prompt, counted now since admission did not need it; off the loop, as the
            # tokenizer may load for the first time here.
            record.prompt_estimate = (await asyncio.to_thread(estimate_call, call, 0)).prompt
        if isinstance(result, Exhausted):
            raise result.error
    except GatewayError as exc:
        return await _failed(gw, exc, record, admission, started)
    except StoreUnavailable as exc:
        return await _failed(gw, storage_unavailable(exc), record, admission, started)
    except Exception:
        # A bug, not a caller's error: still answered in the envelope and, above all, metered, so the
        # reservation taken for this request is given back rather than held until the window ends.
        log.exception("unhandled error in the pipeline")
        error = GatewayError("The gateway failed to handle this request.")
        return await _failed(gw, error, record, admission, started)

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
        body = result.body
        if result.status >= 400:
            body = upstream_error_body(result.status, body, headers)
        answer = _answer(body, result.headers.get("content-type", "")) if result.status == 200 else None
        record.usage = _usage_of(answer) if operation in METERED else None
        if operation is Operation.RESPONSES_RETRIEVE:
            record.usage = await lateusage.background_usage(gw, caller, answer, result.backend)
        elif record.usage is not None and call.body.get("background") is True and answer is not None:
            await lateusage.claim_background(gw, caller, str(answer.get("id")), result.backend)
        await _remember(gw, caller, route=route, call=call, result=result, answer=answer)
        record.outcome = Outcome.SUCCESS if result.status < 400 else Outcome.CLIENT_ERROR
        if record.request_body is not None:
            record.completion = answer or _answer(result.body) or result.body.decode(errors="replace")
        record.backend_seconds = result.backend_seconds
        record.seconds = time.perf_counter() - started
        await gw.meter.finish(record, admission)
        if gw.cache is not None and lookup is not None:
            gw.cache.save(lookup, result.status, body, answer)
        return GatewayResponse(result.status, headers, body)
    headers["cache-control"] = "no-cache"
    if result.stream.object_id is not None and call.body.get("store") is not False:
        # Pinned before the caller sees the id, so a follow-up sent at once finds its backend.
        await gw.affinity.pin(caller, result.stream.object_id, result.backend, call.deployment)
        if call.body.get("background") is True:
            await lateusage.claim_background(gw, caller, result.stream.object_id, result.backend)
    recorder = gw.cache.recorder(lookup) if gw.cache is not None else None
    transcript = StreamTranscript(gw.settings.prompt_log.max_record_bytes) if record.request_body is not None else None
    record.ready_seconds = time.perf_counter() - started  # the first event is here: the rest is the backend's pace
    record.backend_seconds = result.backend_seconds
    gw.stream_opened(result.stream)
    stream = _metered(gw, result.stream, record, admission, started, recorder=recorder, transcript=transcript)
    return GatewayResponse(200, headers, stream=stream)


def _check_deployment(gw: Gateway, caller: Caller, deployment: str) -> None:
    if not gw.router.knows(deployment):
        raise NotFound(f"The deployment '{clip(deployment)}' does not exist.", code="DeploymentNotFound")
    if not caller.may_use(deployment):
        raise Forbidden(
            f"This subscription may not use the deployment '{clip(deployment)}'.",
            code="deployment_not_allowed",
        )


def _backend_call(
    request: GatewayRequest,
    route: Route,
    call: api.ApiCall,
    placement: Placement,
    *,
    streamed: bool,
    chat_stream: bool,
    pinned: str | None = None,
) -> BackendCall:
    """What the proxy sends: the caller's body as it came (JSON re-encoded only to ask a chat stream's usage)."""
    spec = route.spec
    params: dict[str, str] | None = None
    if not spec.deployment_scoped:
        params = {k: v for k in FORWARD_QUERY if (v := request.query.get(k))}
        if not route.v1 or "api-version" in request.query:
            params["api-version"] = call.api_version
    content_type = {
        Body.JSON: "application/json",
        Body.MULTIPART: request.headers.get("content-type", ""),
        Body.NONE: "",
    }[spec.body]
    return BackendCall(
        deployment=placement.deployment,
        operation=spec.operation.value,
        body=api.with_usage_requested(call.body) if chat_stream else request.body,
        stream=streamed,
        strip_usage_chunk=chat_stream and not api.wants_usage(call.body),
        request_id=request.request_id,
        api_version=call.api_version,
        client_headers=request.headers,
        method=spec.method,
        upstream_path=None if spec.deployment_scoped else route.upstream_path(),
        params=params,
        content_type=content_type,
        relay=spec.relay.value if spec.relay is not None else "events",
        name_model=spec.operation is Operation.RESPONSES_CREATE,
        pinned=pinned or placement.pinned,
        seek=placement.seek,
    )


async def _remember(
    gw: Gateway,
    caller: Caller,
    *,
    route: Route,
    call: api.ApiCall,
    result: ProxyResult,
    answer: dict[str, Any] | None,
) -> None:
    """Affinity after a unary answer: pin what it created, forget what it deleted, pin a batch's result files."""
    if result.status != 200:
        return
    if (object_id := created_id(route, call, answer)) is not None:
        deployment = call.deployment if route.operation is Operation.RESPONSES_CREATE else ""
        await gw.affinity.pin(caller, object_id, result.backend, deployment)
    if route.spec.method == "DELETE" and route.object_id:
        await gw.affinity.forget(route.object_id)
    for file_id in produced_files(answer):
        if not await gw.affinity.known(file_id):
            await gw.affinity.pin(caller, file_id, result.backend, "")
    if route.operation is Operation.BATCHES_RETRIEVE:
        await lateusage.meter_when_completed(gw, caller, answer, result.backend, v1=route.v1)


async def _list_everywhere(
    gw: Gateway,
    request: GatewayRequest,
    route: Route,
    *,
    record: RequestRecord,
    admission: Admission,
    started: float,
) -> GatewayResponse:
    """`GET /files` and `GET /batches`: asked of every backend at once, merged newest first, the caller's own only.

    Each backend pages by itself (`limit`, `after`); the merged page has
    `has_more` if any backend had more. A backend that cannot answer is left
    out and named in `x-gateway-unreachable`.
    """
    call = api.ApiCall(route.operation, "", {}, request.query.get("api-version") or DEFAULT_API_VERSION)
    names = [b.name for b in gw.settings.backends]
    results = await asyncio.gather(
        *(
            gw.proxy.forward(
                _backend_call(request, route, call, Placement(ACCOUNT), streamed=False, chat_stream=False, pinned=n)
            )
            for n in names
        )
    )
    items: list[dict[str, Any]] = []
    has_more = False
    unreachable: list[str] = []
    answered: list[str] = []
    for name, result in zip(names, results, strict=True):
        record.attempts += _attempts(result.attempts)
        answer = _answer(result.body) if isinstance(result, ProxyResult) and result.status == 200 else None
        data = answer.get("data") if answer is not None else None
        if answer is None or not isinstance(data, list):
            unreachable.append(name)
            continue
        answered.append(name)
        items += [item for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]
        has_more = has_more or answer.get("has_more") is True
    refused = [r for r in results if isinstance(r, ProxyResult) and 400 <= r.status < 500]
    if not answered and refused and len(refused) == len(results):
        # Every backend refused the request itself (an api-version the v1 routes do not take, a `limit` out of
        # range): the caller's mistake, answered as the first backend put it, not a 503 saying "retry later".
        headers = {**admission.headers, "x-request-id": request.request_id}
        envelope = upstream_error_body(refused[0].status, refused[0].body, headers)
        headers["content-type"] = "application/json"
        record.status, record.outcome = refused[0].status, Outcome.CLIENT_ERROR
        record.seconds = time.perf_counter() - started
        await gw.meter.finish(record, admission)
        return GatewayResponse(refused[0].status, headers, envelope)
    if not answered:
        exc = ServiceUnavailable(
            "No backend could list these objects now; retry later.", headers=retry_after_headers(10)
        )
        record.status, record.outcome, record.error = exc.status, Outcome.BACKEND_ERROR, exc.code
        record.seconds = time.perf_counter() - started
        await gw.meter.finish(record, admission)
        return error_response(exc, request.request_id, admission.headers)
    assert record.caller is not None  # noqa: S101 - authenticated before any listing
    mine = await gw.affinity.mine(record.caller, (item["id"] for item in items))
    items = sorted((i for i in items if i["id"] in mine), key=lambda i: i.get("created_at") or 0, reverse=True)
    body = {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }
    headers = {
        "content-type": "application/json",
        **admission.headers,
        "x-request-id": request.request_id,
        "x-gateway-backend": ",".join(answered),
    }
    if unreachable:
        headers["x-gateway-unreachable"] = ",".join(unreachable)
    record.status, record.outcome = 200, Outcome.SUCCESS
    record.seconds = time.perf_counter() - started
    await gw.meter.finish(record, admission)
    return GatewayResponse(200, headers, json.dumps(body, separators=(",", ":")).encode())


async def _failed(
    gw: Gateway,
    exc: GatewayError,
    record: RequestRecord,
    admission: Admission | None,
    started: float,
) -> GatewayResponse:
    record.status, record.outcome, record.error = exc.status, _outcome_of(exc), exc.code
    if record.request_body is not None:
        record.completion = exc.envelope()
    record.seconds = time.perf_counter() - started
    await gw.meter.finish(record, admission)
    return error_response(exc, record.request_id, admission.headers if admission else None)


def upstream_error_body(status: int, body: bytes, headers: dict[str, str]) -> bytes:
    """A backend's error as the caller sees it: its own envelope when it sent one, else ours with its status.

    Backends (and the proxies in front of them) answer some errors in plain text or HTML (a 413 from a
    front door, a 502 from a load balancer); a caller's SDK expects the envelope on every error.
    """
    answer = _answer(body)
    if answer is not None and isinstance(answer.get("error"), dict):
        return body
    for name in [n for n in headers if n.lower() in ("content-type", "content-length", "content-encoding")]:
        del headers[name]
    headers["content-type"] = "application/json"
    text = body.decode("utf-8", errors="replace").strip()
    message = f"The backend answered {status}" + (f": {clip(text)}" if text else ".")
    error = GatewayError(message, code=f"backend_{status}")
    error.type = "invalid_request_error" if status < 500 else "server_error"
    return error.body()


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
                if not stream.binary:
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
        # (A Responses stream's text is in typed deltas, counted as one token each.)
        record.usage = Usage(admission.prompt_estimate, sent.tokens() or ended.content_events)
    record.seconds = time.perf_counter() - started
    if ended.error:
        record.outcome, record.error = Outcome.BACKEND_ERROR, ended.error
    elif not finished:
        record.outcome, record.error = Outcome.CLIENT_ERROR, "client disconnected"
    await gw.meter.finish(record, admission)
