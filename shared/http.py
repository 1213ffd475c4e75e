"""The gateway's HTTP entries by name, as `function_app.py` calls them, and the health answer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from shared import admin, pipeline
from shared.gateway import Gateway
from shared.models import GatewayRequest, GatewayResponse


async def health(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    """Liveness: the process is up and its configuration is valid. Backends are the probe's business."""
    body = {"status": "ok", "instance": gateway.instance_id, "stores": gateway.stores.kind}
    return GatewayResponse(
        200,
        {"content-type": "application/json", "x-request-id": request.request_id},
        json.dumps(body).encode(),
    )


ENTRIES: dict[str, Callable[[Gateway, GatewayRequest], Awaitable[GatewayResponse]]] = {
    "proxy": pipeline.handle,
    "health": health,
    "admin": admin.handle,
}
