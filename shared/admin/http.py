"""The admin HTTP API under `/gateway/admin/`, behind `x-admin-key` (off when GATEWAY_ADMIN_KEY is unset).

    POST   subscriptions                      create; answers 201 with both keys, shown this once
    GET    subscriptions                      list
    GET    subscriptions/{id}                 show
    PATCH  subscriptions/{id}                 change name, state, limits, expiry, allowed deployments
    POST   subscriptions/{id}/regenerate      {"key": "primary" | "secondary"}; answers the new key once
    DELETE subscriptions/{id}
    GET    backends                           breaker state, throttles and last probe of every backend
    GET    stats                              this instance's counters: storage transactions, limits, fallbacks
    GET    usage                              (shared.admin.usage) usage by subscription, deployment or backend

Errors are raised; the HTTP layer renders them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared import jsonbody
from shared.admin.access import require_admin
from shared.admin.backends import backends_report, stats_report
from shared.admin.subscriptions import SubscriptionAdmin
from shared.errors import MethodNotAllowed, NotFound
from shared.logs import clip
from shared.models import GatewayRequest, GatewayResponse

if TYPE_CHECKING:
    from shared.gateway import Gateway


def _json(status: int, payload: Any, request_id: str) -> GatewayResponse:
    return GatewayResponse(
        status, {"content-type": "application/json", "x-request-id": request_id}, json.dumps(payload).encode()
    )


def _body(request: GatewayRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    return jsonbody.load_object(request.body)


async def handle(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    require_admin(gateway.settings, request)
    parts = [p for p in request.path.split("/") if p][2:]  # after "gateway", "admin"
    service = SubscriptionAdmin(gateway.stores.subscriptions)
    rid, method = request.request_id, request.method
    if parts == ["subscriptions"]:
        if method == "POST":
            return _json(201, await service.create(_body(request)), rid)
        if method == "GET":
            return _json(200, {"data": await service.list()}, rid)
        raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET, POST"})
    if len(parts) == 2 and parts[0] == "subscriptions":
        if method == "GET":
            return _json(200, await service.show(parts[1]), rid)
        if method == "PATCH":
            result = await service.update(parts[1], _body(request))
            gateway.authenticator.forget()
            return _json(200, result, rid)
        if method == "DELETE":
            await service.delete(parts[1])
            gateway.authenticator.forget()
            return GatewayResponse(204, {"x-request-id": rid})
        raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET, PATCH, DELETE"})
    if len(parts) == 3 and parts[0] == "subscriptions" and parts[2] == "regenerate":
        if method != "POST":
            raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "POST"})
        which = _body(request).get("key", "primary")
        result = await service.regenerate(parts[1], str(which))
        gateway.authenticator.forget()
        return _json(200, result, rid)
    if parts == ["backends"]:
        if method != "GET":
            raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET"})
        return _json(200, await backends_report(gateway), rid)
    if parts == ["stats"]:
        if method != "GET":
            raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET"})
        return _json(200, stats_report(gateway), rid)
    raise NotFound(f"No such admin route: {clip(method, 20)} {clip(request.path)}", code="route_not_found")
