"""The gateway's exceptions, and the one function that turns an error into a response.

One root, `GatewayException`. Below it, `GatewayError` is everything a caller
can see: it carries the HTTP status, the envelope fields and any headers
(Retry-After, rate-limit headers). The other branches never reach a caller as
they are: configuration problems stop the start, store and embedding failures
make a stage degrade, and a failed attempt makes the proxy fail over. Foreign
exceptions are mapped to these at the I/O boundary, in one helper per library:
aiohttp in `shared.upstream`, azure-core in `shared.stores.tables` and
`shared.stores.cosmos`.

    GatewayException
     ├── GatewayError                  caller-visible, rendered by `error_response`
     │    ├── BadRequest               400  invalid_request_error
     │    │    ├── PayloadTooLarge     413
     │    │    └── ContentFiltered     400  content_filter (Content Safety blocked the prompt)
     │    ├── Unauthorized             401  (missing or wrong key)
     │    ├── Forbidden                403  (suspended, expired, deployment not allowed)
     │    │    └── QuotaExceeded       403  (period token quota spent)
     │    │         └── BudgetExceeded 403  (period money budget spent)
     │    ├── NotFound                 404  (unknown route, deployment or record)
     │    ├── MethodNotAllowed         405
     │    ├── Conflict                 409  (an admin change that clashes with another record)
     │    ├── RateLimited              429  (subscription TPM / RPM)
     │    ├── BackendsThrottled        429  (every backend answered 429 or is cooling down)
     │    ├── BackendError             502  (a backend failed after the stream began)
     │    ├── NoBackendAvailable       503  (no healthy backend for the deployment)
     │    ├── AffinityUnavailable      503  (the one backend holding a stored object is down)
     │    ├── GatewayOverloaded        503  (the gateway's own slots are full; shed before any backend)
     │    └── ServiceUnavailable       503  (the gateway itself cannot serve: config, storage; with Retry-After)
     ├── ConfigError                   invalid settings; every problem listed; stops the start
     ├── StoreUnavailable              a state store failed or timed out; stages degrade
     ├── EmbeddingUnavailable          the cache's embedder failed; the cache is bypassed
     ├── AttemptFailed                 one backend attempt failed before the first byte; the proxy fails over
     ├── LocalLimit                    (shared.capacity) the gateway's own limit stopped an attempt; never the backend's
     │    ├── PoolFull                 no connection slot came free in time
     │    └── LoopStalled              a timeout fired while this worker's event loop was stalled
     ├── InvalidToken                  (shared.entra.tokens) a bearer token failed validation; mapped to 401
     ├── KeysUnavailable               (shared.entra.keys) the tenant's signing keys cannot be fetched; mapped to 503
     └── Unavailable                   (shared.contentsafety.stage) Content Safety did not answer; fail open or closed
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared.models import GatewayResponse


class GatewayException(Exception):
    """The root of every exception the gateway raises on purpose."""


class GatewayError(GatewayException):
    status = 500
    type = "server_error"
    code = "internal_error"
    # False: the openai SDKs must not retry (they honour `x-should-retry`); None: their own rules apply.
    should_retry: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def body(self) -> bytes:
        return json.dumps(self.envelope()).encode()


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"
    should_retry = False


class ContentFiltered(BadRequest):
    """The prompt was blocked before any backend saw it; the envelope carries the verdict as Azure OpenAI does."""

    code = "content_filter"

    def __init__(self, message: str, result: Mapping[str, object]) -> None:
        super().__init__(message, param="prompt")
        self.result = dict(result)

    def envelope(self) -> dict[str, dict[str, Any]]:  # the base envelope, with the verdict as innererror
        error: dict[str, Any] = dict(super().envelope()["error"])
        error["status"] = self.status
        error["innererror"] = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": self.result}
        return {"error": error}


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class QuotaExceeded(Forbidden):
    type = "insufficient_quota"
    code = "quota_exceeded"


class BudgetExceeded(QuotaExceeded):
    code = "budget_exceeded"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BackendsThrottled(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "backends_throttled"


class BackendError(GatewayError):
    status = 502
    type = "server_error"
    code = "backend_error"


class NoBackendAvailable(GatewayError):
    status = 503
    type = "server_error"
    code = "no_backend_available"


class AffinityUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "affinity_backend_unavailable"


class GatewayOverloaded(GatewayError):
    status = 503
    type = "server_error"
    code = "gateway_overloaded"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class ConfigError(GatewayException):
    """Invalid configuration; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid gateway configuration:\n  - " + "\n  - ".join(problems))


class StoreUnavailable(GatewayException):
    """A state store could not be reached or answered with an unexpected error."""


class EmbeddingUnavailable(GatewayException):
    """The embedder could not produce a vector (model missing, deployment failing); the cache is bypassed."""


class AttemptFailed(GatewayException):
    """One backend attempt failed before anything reached the caller; the proxy fails over."""

    def __init__(
        self,
        outcome: str,
        retry_after: float | None = None,
        status: int | None = None,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(outcome)
        self.outcome = outcome  # the status code, or "connect_error" / "timeout" / "read_error" / ...
        self.retry_after = retry_after
        self.status = status
        self.body = body  # a 5xx answer's body (bounded): read for its reason, and passed on if every backend fails
        self.headers: dict[str, str] = dict(headers or {})


def retry_after_headers(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds (rounded up, at least 1) and retry-after-ms, as Azure OpenAI sends them."""
    ms = max(1, int(seconds * 1000 + 0.999))
    return {"Retry-After": str(max(1, (ms + 999) // 1000)), "retry-after-ms": str(ms)}


STORAGE_RETRY_SECONDS = 5.0


def storage_unavailable(exc: StoreUnavailable | None = None) -> ServiceUnavailable:
    """What a caller sees when a route needs storage that failed or timed out: 503 with Retry-After, never a 500."""
    return ServiceUnavailable(
        "The gateway's storage is unavailable right now; retry shortly.",
        code="storage_unavailable",
        headers=retry_after_headers(STORAGE_RETRY_SECONDS),
    )


# When nothing better is known (no breaker, throttle or storage retry is scheduled), a 503 still says when to
# come back: a caller that retries at once adds load exactly when the gateway cannot serve it.
DEFAULT_RETRY_SECONDS = 1.0


def with_retry_after(status: int, headers: dict[str, str]) -> dict[str, str]:
    """`headers`, with a Retry-After added if `status` is 503 and none is there: every 503 says when to retry."""
    if status == 503 and not any(k.lower() == "retry-after" for k in headers):
        headers.update(retry_after_headers(DEFAULT_RETRY_SECONDS))
    return headers


def error_response(exc: GatewayError, request_id: str, extra: Mapping[str, str] | None = None) -> GatewayResponse:
    """The one rendering of an error: the envelope, its status and headers, and the request id."""
    headers = {"content-type": "application/json", "x-request-id": request_id, **(extra or {}), **exc.headers}
    if exc.should_retry is False:
        headers.setdefault("x-should-retry", "false")
    return GatewayResponse(exc.status, with_retry_after(exc.status, headers), exc.body())
