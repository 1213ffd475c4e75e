"""Sending a request to the backends: failover before the first byte, then an unbuffered stream.

An attempt fails over (at once, to the next candidate) on 429, 5xx, 401/403
(our credentials, not the caller's), connection errors and timeouts, as long as
nothing has reached the caller yet. Other 4xx answers are the caller's and pass
through. After the first event of a stream has been sent, a backend failure
ends the caller's stream with an error event. aiohttp exceptions are mapped
in `shared.upstream`, which builds every backend URL and header set.

Which failures the breakers count is `shared.blame`'s rule: a 5xx counts only
once another backend has served the same body, a request every backend fails
with a 5xx counts against none (the caller gets the last answer), and a
stream's end (complete, cut by the backend, left by the caller, cut by the
gateway's shutdown) is reported when it ends.

A call naming a stored object (`shared.affinity`) is either `pinned` to the
backend holding it (one attempt, no failover: another backend does not have
it) or, when no backend is known for it, `seek`s it: a 404 moves on to the
next backend, and the last 404 is the answer if none has it.

Every call holds a slot of `shared.capacity` for its backend while its
connection is in use. A slot that does not come free in time is the
gateway's own limit, not the backend's failure: it is never counted toward a
breaker or a throttle, and if no backend could even be tried the caller gets
the gateway's load-shedding answer (503 `gateway_overloaded`, Retry-After).
So is a timeout that fired while the gateway's own event loop was stalled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import aiohttp
from yarl import URL

from shared import telemetry
from shared.backendauth import BackendCredential
from shared.backendconfig import BackendConfig
from shared.blame import Attribution, Blame, Failure, blame
from shared.breaker import BreakerBoard
from shared.capacity import Capacity, CapacityPolicy, LocalLimit, LoopStalled, overloaded
from shared.clock import Clock
from shared.errors import (
    DEFAULT_RETRY_SECONDS,
    AffinityUnavailable,
    AttemptFailed,
    BackendsThrottled,
    GatewayError,
    NoBackendAvailable,
    retry_after_headers,
)
from shared.httpsession import SessionProvider
from shared.relay import RelayedStream, StreamOutcome
from shared.routing import Candidate, Router, Unavailable, parse_retry_after
from shared.sse import PassThrough, SseRelay
from shared.surface import with_model
from shared.upstream import account_url, deployment_url, mapped, request_headers

log = logging.getLogger("gateway.proxy")

# Parsed backend URLs kept per proxy (one per backend, deployment, operation and api-version).
MAX_CACHED_URLS = 1024

# Backend response headers worth returning; the backend's own rate-limit headers describe the
# shared backend, not the caller's subscription, so they stay here.
RETURN_RESPONSE_HEADERS = (
    "content-type",
    "content-disposition",
    "x-ms-region",
    "openai-processing-ms",
    "x-ms-deployment-name",
)
# How much of a backend's 5xx body is read: enough for its error envelope, never a whole runaway body.
ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class BackendCall:
    deployment: str  # the gateway's name (routing.ACCOUNT for files and batches)
    operation: str  # an `Operation` value: for deployment-scoped operations, also the path
    body: bytes
    stream: bool
    strip_usage_chunk: bool
    request_id: str
    api_version: str
    client_headers: Mapping[str, str]
    extra_headers: Mapping[str, str] = field(default_factory=dict)  # trace context
    method: str = "POST"
    upstream_path: str | None = None  # under /openai/ for account operations ("v1/files"); None: deployment-scoped
    params: Mapping[str, str] | None = None  # the query sent; None: api-version alone
    content_type: str = "application/json"  # the caller's for uploads; "" when there is no body
    relay: str = "events"  # how a stream is relayed: "events", "typed" (Responses) or "binary"
    name_model: bool = False  # write the backend's own deployment name into the JSON body's "model"
    pinned: str | None = None  # the only backend to try: it holds the object the call names
    seek: bool = False  # the object's backend is unknown: a 404 moves on to the next backend


@dataclass(frozen=True, slots=True)
class Attempt:
    backend: str
    outcome: str  # the status code, or "connect_error" / "timeout" / "read_error"
    seconds: float


@dataclass(frozen=True, slots=True)
class ProxyResult:
    status: int
    headers: dict[str, str]
    backend: str
    region: str | None
    attempts: tuple[Attempt, ...]  # every try, in order, this one last
    body: bytes = b""
    stream: RelayedStream | None = None
    backend_seconds: float = 0.0  # time spent waiting on the backend (for gateway overhead)


@dataclass(frozen=True, slots=True)
class Exhausted:
    """No backend answered: the error for the caller, and every try that led to it."""

    error: GatewayError
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: RelayedStream | None = None
    backend_seconds: float = 0.0


class Proxy:
    def __init__(
        self,
        router: Router,
        breakers: BreakerBoard,
        credentials: Mapping[str, BackendCredential],
        session: SessionProvider,
        clock: Clock,
        *,
        max_attempts: int,
        default_throttle_seconds: float,
        capacity: Capacity | None = None,
    ) -> None:
        self._capacity = capacity or Capacity(CapacityPolicy())
        # Parsed once: building and parsing a URL is a good part of aiohttp's cost per call.
        self._urls: dict[tuple[str, str, str, str], URL] = {}
        self._timeouts: dict[tuple[str, bool], aiohttp.ClientTimeout] = {}
        self._router = router
        self._breakers = breakers
        self._credentials = credentials
        self._session = session
        self._clock = clock
        self._max_attempts = max_attempts
        self._default_throttle = default_throttle_seconds

    async def forward(self, call: BackendCall) -> ProxyResult | Exhausted:
        """Send `call`, failing over as needed; the result lists every attempt (for the meter)."""
        attempts: list[Attempt] = []
        tried: set[str] = set()
        throttled_for: list[float] = []
        failures: list[str] = []
        attribution = Attribution()
        local: list[str] = []  # attempts our own limits stopped (full slots, a stalled loop): never the backend's
        unavailable: Unavailable | None = None
        missed: ProxyResult | None = None
        limit = max(self._max_attempts, self._router.count(call.deployment)) if call.seek else self._max_attempts
        while len(attempts) < limit:
            choice = await self._next(call, tried)
            if isinstance(choice, Unavailable):
                unavailable = choice
                break
            tried.add(choice.backend.name)
            started = time.perf_counter()
            span = telemetry.current().attempt(
                choice.backend.name, call.deployment, call.operation, choice.backend.endpoint
            )
            try:
                answer = await self._attempt(choice, call, span.headers)
            except LocalLimit as exc:
                # Our own limit, not the backend: no attempt, breaker or throttle; try the next backend.
                span.end("gateway_overloaded")
                local.append(str(exc))
                if isinstance(exc, LoopStalled) and len(local) == 1:
                    tried.discard(choice.backend.name)  # the loop has caught up: this backend gets one more go
                log.warning("%s; trying again", exc)
                continue
            except AttemptFailed as failed:
                span.end(failed.outcome)
                seconds = time.perf_counter() - started
                attempts.append(Attempt(choice.backend.name, failed.outcome, seconds))
                await self._after_failure(
                    choice, call.deployment, failed, throttled_for, failures, attribution=attribution
                )
                continue
            span.end(str(answer.status))
            attempts.append(Attempt(choice.backend.name, str(answer.status), answer.backend_seconds))
            await self._answered(choice, answer, attribution)
            backend = choice.backend
            result = ProxyResult(
                answer.status,
                answer.headers,
                backend.name,
                backend.region,
                tuple(attempts),
                body=answer.body,
                stream=answer.stream,
                backend_seconds=answer.backend_seconds,
            )
            if call.seek and _missing(answer):
                missed = result  # not on this backend: look on the next one
                continue
            return result
        if missed is not None:
            return ProxyResult(
                missed.status,
                missed.headers,
                missed.backend,
                missed.region,
                tuple(attempts),
                body=missed.body,
                backend_seconds=missed.backend_seconds,
            )
        if local and not attempts:
            return Exhausted(overloaded(call.deployment), ())
        failures += local
        error = self._exhausted(call.deployment, attempts, throttled_for, failures, unavailable)
        last = attribution.request_fault()
        if last is not None:
            # Every backend failed this very body: counted against none, and the caller hears the last reason.
            log.warning("every backend failed the same request with a 5xx; no breaker counts it")
            error.message += (
                " Every backend failed this request, so it may be the request itself;"
                f" the last said: {_reason(last.failed.body)}"
            )
        if call.pinned is not None and not isinstance(error, BackendsThrottled):
            # When to retry is when that one backend may be tried again, as for any 503.
            error = AffinityUnavailable(
                f"The backend '{call.pinned}' that holds this object cannot be reached now "
                f"({'; '.join(failures) or 'its circuit is open'}); no other backend has it. Retry later.",
                headers=error.headers or retry_after_headers(DEFAULT_RETRY_SECONDS),
            )
        return Exhausted(error, tuple(attempts))

    async def _next(self, call: BackendCall, tried: set[str]) -> Candidate | Unavailable:
        if call.pinned is None:
            return await self._router.next(call.deployment, tried)
        if tried:
            return Unavailable(None, 0, 0)  # one attempt: no other backend holds the object
        return await self._router.pinned(call.deployment, call.pinned)

    async def _answered(self, choice: Candidate, answer: _Answer, attribution: Attribution) -> None:
        """Report a backend that answered: it succeeded, and the 5xx answers before it were their backends' fault."""
        if answer.status < 400:
            for suspect in attribution.confirmed():
                await self._breakers.failure(
                    suspect.breaker_key,
                    retry_after=suspect.failed.retry_after,
                    reason=f"{suspect.failed.outcome} (another backend served the same request)",
                )
        if answer.stream is not None:
            answer.stream.reporting_to(partial(self._stream_ended, choice.breaker_key))
        else:
            await self._breakers.success(choice.breaker_key)

    async def _stream_ended(self, breaker_key: str, outcome: StreamOutcome, aborted: bool) -> None:
        """A stream's end, for its breaker: cut by the backend counts; left by the caller or cut by us does not."""
        if aborted:
            return
        if outcome.error:
            await self._breakers.failure(breaker_key, retry_after=None, reason=f"mid-stream: {outcome.error}")
        else:
            await self._breakers.success(breaker_key)

    async def _after_failure(
        self,
        choice: Candidate,
        deployment: str,
        failed: AttemptFailed,
        throttled_for: list[float],
        failures: list[str],
        *,
        attribution: Attribution,
    ) -> None:
        name = choice.backend.name
        if failed.status == 429 or failed.retry_after is not None:
            seconds = failed.retry_after if failed.retry_after is not None else self._default_throttle
            self._router.throttle(name, deployment, seconds)
            throttled_for.append(seconds)
        verdict = blame(self._breakers.policy, failed)
        attribution.add(Failure(choice.breaker_key, name, failed), verdict)
        if verdict is Blame.BACKEND:
            await self._breakers.failure(choice.breaker_key, retry_after=failed.retry_after, reason=failed.outcome)
        failures.append(f"{name}: {failed.outcome}")
        log.warning("backend %s failed (%s); failing over", name, failed.outcome)

    def _exhausted(
        self,
        deployment: str,
        attempts: list[Attempt],
        throttled_for: list[float],
        failures: list[str],
        unavailable: Unavailable | None,
    ) -> GatewayError:
        waits = list(throttled_for)
        if unavailable and unavailable.retry_after is not None:
            waits.append(unavailable.retry_after)
        every_answer_throttled = all(a.outcome == "429" for a in attempts)
        if waits and every_answer_throttled and not (unavailable and unavailable.open_breakers):
            soonest = min(waits)
            return BackendsThrottled(
                f"Every backend for deployment '{deployment}' is throttled; retry after {soonest:.1f} s.",
                headers=retry_after_headers(soonest),
            )
        detail = "; ".join(failures) if failures else "every backend is cooling down or its circuit is open"
        back = self._router.soonest_back(deployment)
        if back is not None:
            waits.append(back)
        # The soonest a breaker half-opens or a throttle ends; if none is scheduled, the short default.
        headers = retry_after_headers(min(waits) if waits else DEFAULT_RETRY_SECONDS)
        return NoBackendAvailable(f"No backend could serve deployment '{deployment}' ({detail}).", headers=headers)

    def _url(self, endpoint: str, deployment: str, operation: str, api_version: str) -> URL:
        key = (endpoint, deployment, operation, api_version)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= MAX_CACHED_URLS:  # api-version comes from callers: keep the cache bounded
                self._urls.clear()
            url = URL(deployment_url(endpoint, deployment, operation)).with_query({"api-version": api_version})
            self._urls[key] = url
        return url

    async def _attempt(self, choice: Candidate, call: BackendCall, trace_headers: Mapping[str, str]) -> _Answer:
        backend = choice.backend
        if call.upstream_path is None:
            url = self._url(backend.endpoint, choice.deployment, call.operation, call.api_version)
        else:
            url = URL(account_url(backend.endpoint, call.upstream_path))
        body = call.body
        if call.name_model and choice.deployment and choice.deployment != call.deployment:
            body = with_model(body, choice.deployment)
        credential = await self._credentials[backend.name].headers()
        headers = request_headers(
            call.client_headers,
            call.request_id,
            credential,
            call.extra_headers,
            trace_headers,
            content_type=call.content_type,
        )
        session = await self._session()
        release = await self._capacity.acquire(backend.name, call.stream)  # PoolFull: a local outcome
        started = asyncio.get_running_loop().time()
        try:
            answer = await self._send(
                session, url=url, body=body, headers=headers, call=call, backend=backend, release=release
            )
        except AttemptFailed as failed:
            release()
            if failed.status is None and self._capacity.loop.stalled_since(started):
                raise LoopStalled(backend.name, failed.outcome) from failed
            raise
        except BaseException:
            release()
            raise
        if answer.stream is None:
            release()  # a stream gives its slot back when it ends
        return answer

    async def _send(
        self,
        session: aiohttp.ClientSession,
        *,
        url: URL,
        body: bytes,
        headers: dict[str, str],
        call: BackendCall,
        backend: BackendConfig,
        release: Callable[[], None],
    ) -> _Answer:
        timeout = self._timeouts.get((backend.name, call.stream))
        if timeout is None:
            # `sock_connect`, not `connect`: the latter would also time a wait for a pooled connection.
            # A stream's reads are timed by the relay (`RelayedStream`), its first event by first_byte.
            timeout = self._timeouts[(backend.name, call.stream)] = aiohttp.ClientTimeout(
                total=None,
                sock_connect=backend.connect_timeout,
                sock_read=None if call.stream else backend.read_timeout,
            )
        started = time.perf_counter()
        with mapped():
            async with asyncio.timeout(backend.first_byte_timeout):
                response = await session.request(
                    call.method,
                    url,
                    params=call.params,
                    data=body or None,
                    headers=headers,
                    timeout=timeout,
                )
        status = response.status
        if status == 429 or status >= 500 or status in (401, 403, 408):
            retry_after = (
                parse_retry_after(response.headers, self._default_throttle)
                if status == 429 or "retry-after" in response.headers or "retry-after-ms" in response.headers
                else None
            )
            body = await _error_body(response) if status >= 500 else b""
            kept = {k: v for k in RETURN_RESPONSE_HEADERS if (v := response.headers.get(k))}
            response.release()
            raise AttemptFailed(str(status), retry_after, status, body=body, headers=kept)
        out_headers = {k: v for k in RETURN_RESPONSE_HEADERS if (v := response.headers.get(k))}
        if call.stream and status == 200:
            stream = await self._open_stream(response, call, backend, release)
            return _Answer(status, out_headers, stream=stream, backend_seconds=time.perf_counter() - started)
        try:
            with mapped(reading=True):
                body = await response.read()
        finally:
            response.release()
        return _Answer(status, out_headers, body, backend_seconds=time.perf_counter() - started)

    async def _open_stream(
        self,
        response: aiohttp.ClientResponse,
        call: BackendCall,
        backend: BackendConfig,
        release: Callable[[], None],
    ) -> RelayedStream:
        relay: SseRelay | PassThrough = (
            PassThrough()
            if call.relay == "binary"
            else SseRelay(strip_usage_chunk=call.strip_usage_chunk, typed=call.relay == "typed")
        )
        first = b""
        chunks = response.content.iter_any()
        try:
            with mapped(reading=True):
                async with asyncio.timeout(backend.first_byte_timeout):
                    while not first:
                        chunk = await anext(chunks, None)
                        if chunk is None:
                            break
                        first = relay.feed(chunk)
        except AttemptFailed:
            response.close()
            raise
        if not first:
            response.close()
            raise AttemptFailed("empty_stream")
        return RelayedStream(
            response, chunks, relay, first, backend.name, release=release, read_timeout=backend.read_timeout
        )


def _missing(answer: _Answer) -> bool:
    """A backend's answer that it does not hold the object: 404, or 400 naming the previous response it lacks."""
    if answer.status == 404:
        return True
    return answer.status == 400 and b"previous_response_id" in answer.body


async def _error_body(response: aiohttp.ClientResponse) -> bytes:
    """The start of a failed answer's body, for its reason; empty if it cannot be read promptly."""
    parts: list[bytes] = []
    size = 0
    try:
        with mapped(reading=True):
            async with asyncio.timeout(5.0):
                while size < ERROR_BODY_BYTES:
                    chunk = await response.content.read(ERROR_BODY_BYTES - size)
                    if not chunk:
                        break
                    parts.append(chunk)
                    size += len(chunk)
    except AttemptFailed:
        return b""
    return b"".join(parts)


def _reason(body: bytes) -> str:
    """A backend error body's message, cut short (it reaches the caller)."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = message if isinstance(message, str) else body.decode("utf-8", "replace")
    text = " ".join(text.split())[:300]
    return repr(text) if text else "(no body)"
