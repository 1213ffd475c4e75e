"""Every error the simulator answers, in Azure OpenAI's envelope: `{"error": {"code", "message", "type", "param"}}`.

Codes and messages follow what Azure OpenAI sends, so a gateway in front of
the simulator meets the same shapes it will meet in production.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from simulator import contentfilter

_STATUS_CODES = {
    400: "BadRequest",
    401: "401",
    403: "Forbidden",
    404: "404",
    408: "Timeout",
    429: "429",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def envelope(
    status: int,
    code: str,
    message: str,
    *,
    type_: str | None = "invalid_request_error",
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    innererror: Mapping[str, object] | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    error: dict[str, object] = {"code": code, "message": message, "type": type_, "param": param, **(extra or {})}
    if innererror is not None:
        error["innererror"] = innererror
    return web.Response(
        status=status,
        body=json.dumps({"error": error}).encode(),
        content_type="application/json",
        headers=headers,
    )


def bad_request(message: str, param: str | None = None) -> web.Response:
    return envelope(400, "BadRequest", message, param=param)


def unauthorized() -> web.Response:
    return envelope(
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
        "for an active subscription and use a correct regional API endpoint for your resource.",
    )


def deployment_not_found(deployment: str) -> web.Response:
    return envelope(
        404,
        "DeploymentNotFound",
        f"The API deployment {deployment} for this resource does not exist. If you created the deployment "
        "within the last 5 minutes, please wait a moment and try again.",
    )


def resource_not_found() -> web.Response:
    return envelope(404, "404", "Resource not found")


def content_filtered() -> web.Response:
    """Azure's refusal of a prompt: code content_filter, and in `innererror` which category tripped and how badly."""
    return envelope(
        400,
        "content_filter",
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
        "Please modify your prompt and retry. To learn more about our content filtering policies please read our "
        "documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
        type_=None,
        param="prompt",
        extra={"status": 400},
        innererror={
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": contentfilter.refused_prompt_result(),
        },
    )


def too_large(message: str) -> web.Response:
    return envelope(413, "RequestEntityTooLarge", message)


def not_found(message: str, *, param: str | None = None, code: str | None = "not_found") -> web.Response:
    """404 for an object (response, file, batch) this resource does not hold."""
    return envelope(404, code or "not_found", message, param=param)


def server_error(status: int, message: str | None = None) -> web.Response:
    return envelope(
        status,
        _STATUS_CODES.get(status, str(status)),
        message or f"The simulator was told to fail this request with {status}.",
        type_="server_error" if status >= 500 else "invalid_request_error",
    )


def throttled(
    retry_after_ms: int,
    *,
    reason: str,
    operation: str,
    headers: Mapping[str, str] | None = None,
    api_version: str | None = None,
) -> web.Response:
    """A 429 as Azure sends it: `Retry-After` in whole seconds (rounded up), `retry-after-ms`, and the reset header."""
    seconds = max(1, -(-retry_after_ms // 1000))
    reset_header = "x-ratelimit-reset-tokens" if reason == "tokens" else "x-ratelimit-reset-requests"
    all_headers = {
        "Retry-After": str(seconds),
        "retry-after-ms": str(retry_after_ms),
        reset_header: str(seconds),
        **(headers or {}),
    }
    limit = "token rate limit" if reason == "tokens" else "call rate limit"
    version = f" version {api_version}" if api_version else ""
    unit = "second" if seconds == 1 else "seconds"
    return envelope(
        429,
        "429",
        f"Requests to the {operation} Operation under Azure OpenAI API{version} have exceeded {limit} of "
        f"your current OpenAI S0 pricing tier. Please retry after {seconds} {unit}. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
        type_=None,
        headers=all_headers,
    )
