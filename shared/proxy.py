"""Sending a request to the backends: failover before the first byte, then an unbuffered stream.

An attempt fails over (at once, to the next candidate) on 429, 5xx, 401/403
(our credentials, not the caller's), connection errors and timeouts, as long as
nothing has reached the caller yet. Other 4xx answers are the caller's and pass
through. After the first event of a stream has been sent, a backend failure
ends the caller's stream with an error event. aiohttp exceptions are mapped
here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp

from shared import telemetry
from shared.backendauth import BackendCredential
from shared.breaker import BreakerBoard
from shared.clock import Clock
from shared.errors import BackendsThrottled, GatewayError, NoBackendAvailable, retry_after_headers
from shared.httpsession import SessionProvider
from shared.models import Usage
from shared.routing import Candidate, Router, Unavailable, parse_retry_after
from shared.sse import SseRelay, error_event

log = logging.getLogger("gateway.proxy")

DEFAULT_API_VERSION = "2024-10-21"
# Request headers a caller may pass on to a backend; everything else (keys, cookies, hosts) stays here.
FORWARD_REQUEST_HEADERS = ("content-type", "accept", "openai-beta", "x-ms-useragent", "user-agent")
# Backend response headers worth returning; the backend's own rate-limit headers describe the
# shared backend, not the caller's subscription, so they stay here.
RETURN_RESPONSE_HEADERS = ("content-type", "x-ms-region", "openai-processing-ms", "x-ms-deployment-name")


@dataclass(frozen=True, slots=True)
class BackendCall:
    deployment: str  # the gateway's name
    operation: str  # "chat/completions" | "embeddings"
    body: bytes
    stream: bool
    strip_usage_chunk: bool
    request_id: str
    api_version: str
    client_headers: Mapping[str, str]
    extra_headers: Mapping[str, str] = field(default_factory=dict)  # trace context


@dataclass(slots=True)
class Attempt:
    backend: str
    outcome: str  # the status code, or "connect_error" / "timeout" / "read_error"
    seconds: float


@dataclass(slots=True)
class ProxyResult:
    status: int
    headers: dict[str, str]
    backend: str
    region: str | None
    body: bytes = b""
    usage: Usage | None = None
    stream: AsyncIterator[bytes] | None = None
    stream_completed: bool = False  # set when a stream ends with [DONE]
    stream_error: str | None = None
    stream_events: int = 0  # content events forwarded (an estimate of completion tokens when a stream is cut)
    backend_seconds: float = 0.0  # time spent waiting on the backend (for gateway overhead)


class _AttemptFailed(Exception):
    def __init__(self, outcome: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.retry_after = retry_after
        self.status = status


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
    ) -> None:
        self._router = router
        self._breakers = breakers
        self._credentials = credentials
        self._session = session
        self._clock = clock
        self._max_attempts = max_attempts
        self._default_throttle = default_throttle_seconds

    async def forward(self, call: BackendCall, attempts: list[Attempt] | None = None) -> ProxyResult:
        """Send `call`, failing over as needed; `attempts`, if given, receives every try in order (for the meter)."""
        attempts = [] if attempts is None else attempts
        tried: set[str] = set()
        throttled_for: list[float] = []
        failures: list[str] = []
        unavailable: Unavailable | None = None
        while len(attempts) < self._max_attempts:
            choice = await self._router.next(call.deployment, tried)
            if isinstance(choice, Unavailable):
                unavailable = choice
                break
            tried.add(choice.backend.name)
            started = time.perf_counter()
            span = telemetry.current().attempt(
                choice.backend.name, call.deployment, call.operation, choice.backend.endpoint
            )
            try:
                result = await self._attempt(choice, call, span.headers)
            except _AttemptFailed as failed:
                span.end(failed.outcome)
                seconds = time.perf_counter() - started
                attempts.append(Attempt(choice.backend.name, failed.outcome, seconds))
                await self._after_failure(choice, call.deployment, failed, throttled_for, failures)
                continue
            span.end(str(result.status))
            attempts.append(Attempt(choice.backend.name, str(result.status), result.backend_seconds))
            if result.status < 400:
                await self._breakers.success(choice.breaker_key)
            return result
        raise self._exhausted(call.deployment, attempts, throttled_for, failures, unavailable)

    async def _after_failure(
        self,
        choice: Candidate,
        deployment: str,
        failed: _AttemptFailed,
        throttled_for: list[float],
        failures: list[str],
    ) -> None:
        name = choice.backend.name
        if failed.status == 429 or failed.retry_after is not None:
            seconds = failed.retry_after if failed.retry_after is not None else self._default_throttle
            self._router.throttle(name, deployment, seconds)
            throttled_for.append(seconds)
        counts = failed.status is None or self._breakers.policy.counts(failed.status)
        if counts:
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
        headers = retry_after_headers(min(waits)) if waits else {}
        return NoBackendAvailable(f"No backend could serve deployment '{deployment}' ({detail}).", headers=headers)

    async def _attempt(self, choice: Candidate, call: BackendCall, trace_headers: Mapping[str, str]) -> ProxyResult:
        backend = choice.backend
        url = f"{backend.endpoint}/openai/deployments/{choice.deployment}/{call.operation}"
        headers = {k: v for k in FORWARD_REQUEST_HEADERS if (v := call.client_headers.get(k))}
        headers.update(call.extra_headers)
        headers.update(trace_headers)  # the attempt's W3C trace context
        headers["x-ms-client-request-id"] = call.request_id
        headers["content-type"] = "application/json"
        headers.update(await self._credentials[backend.name].headers())
        session = await self._session()
        timeout = aiohttp.ClientTimeout(total=None, connect=backend.connect_timeout, sock_read=backend.read_timeout)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(backend.first_byte_timeout):
                response = await session.post(
                    url,
                    params={"api-version": call.api_version},
                    data=call.body,
                    headers=headers,
                    timeout=timeout,
                )
        except TimeoutError as exc:
            raise _AttemptFailed("timeout") from exc
        except aiohttp.ClientError as exc:
            raise _AttemptFailed("connect_error") from exc
        status = response.status
        if status == 429 or status >= 500 or status in (401, 403, 408):
            retry_after = (
                parse_retry_after(response.headers, self._default_throttle)
                if status == 429 or "retry-after" in response.headers or "retry-after-ms" in response.headers
                else None
            )
            response.release()
            raise _AttemptFailed(str(status), retry_after, status)
        out_headers = {k: v for k in RETURN_RESPONSE_HEADERS if (v := response.headers.get(k))}
        result = ProxyResult(status, out_headers, backend.name, backend.region)
        if call.stream and status == 200:
            return await self._open_stream(response, result, call, backend.first_byte_timeout, started)
        try:
            result.body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _AttemptFailed("read_error") from exc
        finally:
            response.release()
        result.backend_seconds = time.perf_counter() - started
        return result

    async def _open_stream(
        self,
        response: aiohttp.ClientResponse,
        result: ProxyResult,
        call: BackendCall,
        first_byte_timeout: float,
        started: float,
    ) -> ProxyResult:
        relay = SseRelay(strip_usage_chunk=call.strip_usage_chunk)
        first = b""
        chunks = response.content.iter_any()
        try:
            async with asyncio.timeout(first_byte_timeout):
                while not first:
                    chunk = await anext(chunks, None)
                    if chunk is None:
                        break
                    first = relay.feed(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            response.close()
            raise _AttemptFailed("timeout" if isinstance(exc, TimeoutError) else "read_error") from exc
        if not first:
            response.close()
            raise _AttemptFailed("empty_stream")
        result.backend_seconds = time.perf_counter() - started
        result.stream = self._relay(response, chunks, relay, first, result)
        return result

    async def _relay(
        self,
        response: aiohttp.ClientResponse,
        chunks: AsyncIterator[bytes],
        relay: SseRelay,
        first: bytes,
        result: ProxyResult,
    ) -> AsyncIterator[bytes]:
        try:
            yield first
            result.usage = relay.usage
            async for chunk in chunks:
                out = relay.feed(chunk)
                result.usage = relay.usage
                if out:
                    yield out
            if not relay.done:
                result.stream_error = "the backend ended the stream early"
                yield error_event("The backend ended the stream before it was complete.")
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.stream_error = f"{type(exc).__name__}"
            log.warning("backend %s failed mid-stream: %s", result.backend, type(exc).__name__)
            yield error_event("The backend failed while streaming the response.")
        finally:
            result.usage = relay.usage
            result.stream_events = relay.content_events
            result.stream_completed = relay.done
            if relay.done:
                response.release()  # read to the end: the connection can be reused
            else:
                response.close()
