"""The gateway's HTTP entries by name, as `function_app.py` calls them, and the health and metrics answers.

`serve` is the one place a `GatewayError` raised by any entry becomes its envelope response.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from shared import api, deployments, pages, pipeline
from shared.admin import http as admin_http
from shared.admin import usage
from shared.admin.access import authorize
from shared.errors import GatewayError, NotFound, error_response
from shared.gateway import Gateway
from shared.models import GatewayRequest, GatewayResponse

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def health(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """Liveness: the process is up and its configuration is valid. Backends are the probe's business."""
    body = {"status": "ok", "instance": gateway.instance_id, "stores": gateway.stores.kind}
    return GatewayResponse(
        200,
        {"content-type": "application/json", "x-request-id": request.request_id},
        json.dumps(body).encode(),
    )


async def metrics(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """`GET /metrics`: this instance's metrics as Prometheus text, behind the admin key."""
    await authorize(gateway.settings, gateway.tokens, request)
    if not gateway.settings.metrics_endpoint:
        raise NotFound("Metrics are not collected here: set GATEWAY_METRICS_ENDPOINT=true.", code="metrics_off")
    body = gateway.telemetry.prometheus().encode()
    return GatewayResponse(200, {"content-type": PROMETHEUS_TEXT, "x-request-id": request.request_id}, body)


async def openai_api(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """The OpenAI-compatible surface: the model list is the gateway's own answer, every other call the pipeline's."""
    models_call = api.models_route(request)
    if models_call is not None:
        return await deployments.handle(gateway, request, models_call)
    return await pipeline.handle(gateway, request)


async def fallback(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """Whatever no other function claims: `/` goes to the chat page, the rest is the API's (a 404 envelope)."""
    if request.path == "/":
        return await pages.handle(gateway, request)
    return await openai_api(gateway, request)


Entry = Callable[[Gateway, GatewayRequest], Awaitable[GatewayResponse]]

ENTRIES: dict[str, Entry] = {
    "proxy": openai_api,
    "fallback": fallback,
    "pages": pages.handle,
    "health": health,
    "admin": admin_http.handle,
    "usage": usage.handle_subscription,
    "admin_usage": usage.handle_admin,
    "metrics": metrics,
}


async def serve(entry: str, gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """Call the named entry; an error it raises is answered in the envelope."""
    try:
        return await ENTRIES[entry](gateway, request)
    except GatewayError as exc:
        return error_response(exc, request.request_id)
