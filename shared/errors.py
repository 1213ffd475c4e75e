"""The gateway's exceptions and the one place they become OpenAI error envelopes.

Every error a caller can see is a `GatewayError`; it carries the HTTP status,
the envelope fields and any headers (Retry-After, rate-limit headers). Foreign
exceptions (aiohttp, azure-core) are mapped to these at the I/O boundary, in
the module that does the I/O.

    GatewayError
     ├── BadRequest            400  invalid_request_error
     │    └── PayloadTooLarge  413
     ├── Unauthorized          401  (missing or wrong subscription key)
     ├── Forbidden             403  (suspended, expired, deployment not allowed)
     │    └── QuotaExceeded    403  (period token quota spent)
     ├── NotFound              404  (unknown route or deployment)
     ├── MethodNotAllowed      405
     ├── RateLimited           429  (subscription TPM / RPM)
     ├── BackendsThrottled     429  (every backend answered 429 or is cooling down)
     ├── BackendError          502  (a backend failed after the stream began)
     └── NoBackendAvailable    503  (no healthy backend for the deployment)

    ConfigError                     (raised at start, never reaches a caller)
    StoreUnavailable                (a store could not be reached; stages degrade)
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

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


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


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


class ServiceUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class ConfigError(Exception):
    """Invalid configuration; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid gateway configuration:\n  - " + "\n  - ".join(problems))


class StoreUnavailable(Exception):
    """A state store could not be reached or answered with an unexpected error."""


def retry_after_headers(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds (rounded up, at least 1) and retry-after-ms, as Azure OpenAI sends them."""
    ms = max(1, int(seconds * 1000 + 0.999))
    return {"Retry-After": str(max(1, (ms + 999) // 1000)), "retry-after-ms": str(ms)}
