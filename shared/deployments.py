"""The model list: the deployments this gateway serves that the calling subscription may use, in OpenAI's shape.

`GET /v1/models` (also `/openai/v1/models`, `/openai/models`) answers
`{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`
and `GET .../models/{id}` one such model, as the `openai` SDK's `models.list()`
and `models.retrieve()` parse them. The names come from GATEWAY_BACKENDS, not
from a backend: a caller sees the gateway's deployment names, never a
backend's own. A deployment the subscription may not use answers 404, the
same as one that does not exist, so a key cannot probe for names it lacks.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.errors import NotFound
from shared.models import Caller, GatewayRequest, GatewayResponse

if TYPE_CHECKING:
    from shared.api import ModelsCall
    from shared.gateway import Gateway

OWNER = "gateway"


def model_view(deployment: str) -> dict[str, Any]:
    # `created` is required by the shape; the gateway does not know when a backend deployment was made.
    return {"id": deployment, "object": "model", "created": 0, "owned_by": OWNER}


def visible(gateway: Gateway, caller: Caller) -> list[str]:
    """The deployments this caller may call, sorted by name."""
    return sorted(d for d in gateway.settings.deployments if caller.may_use(d))


async def handle(gateway: Gateway, request: GatewayRequest, call: ModelsCall) -> GatewayResponse:
    """The list or one model; errors are raised, and answered in the envelope by `shared.http.serve`."""
    caller = await gateway.authenticator.authenticate(request.headers)
    names = visible(gateway, caller)
    if call.model is None:
        payload: dict[str, Any] = {"object": "list", "data": [model_view(n) for n in names]}
    elif call.model in names:
        payload = model_view(call.model)
    else:
        raise NotFound(f"The model '{call.model}' does not exist.", code="model_not_found", param="model")
    headers = {"content-type": "application/json", "x-request-id": request.request_id, "cache-control": "no-store"}
    return GatewayResponse(200, headers, json.dumps(payload).encode())
