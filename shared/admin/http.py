"""The admin HTTP API under `/gateway/admin/`, behind `x-admin-key` or an Entra app role (`shared.admin.access`).

    POST   subscriptions                      create; answers 201 with both keys, shown this once
    GET    subscriptions                      list
    GET    subscriptions/{id}                 show
    PATCH  subscriptions/{id}                 change name, state, limits, expiry, allowed deployments
    POST   subscriptions/{id}/regenerate      {"key": "primary" | "secondary"}; answers the new key once
    DELETE subscriptions/{id}
    GET    backends                           breaker state, throttles and last probe of every backend
    GET    stats                              this instance's counters: storage transactions, limits, fallbacks
    GET    usage                              (shared.admin.usage) usage by subscription, deployment or backend
    GET    requests/{request_id}              a request's audit-log record (?at=<ISO time>&hours=<back from it>)
    GET    audit                              the audit trail, newest first (?limit=, ?subscription=)

Every change (create, update, regenerate, delete) is written to the audit trail.

Errors are raised; the HTTP layer renders them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared import jsonbody
from shared.admin.access import authorize
from shared.admin.audit import DEFAULT_LIMIT, MAX_LIMIT, AuditTrail
from shared.admin.backends import backends_report, stats_report
from shared.admin.subscriptions import SubscriptionAdmin
from shared.clock import parse_instant
from shared.errors import BadRequest, MethodNotAllowed, NotFound
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


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise BadRequest("'limit' must be a whole number.", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be from 1 to {MAX_LIMIT}.", param="limit")
    return limit


async def handle(gateway: Gateway, request: GatewayRequest) -> GatewayResponse:
    actor = await authorize(gateway.settings, gateway.tokens, request)
    parts = [p for p in request.path.split("/") if p][2:]  # after "gateway", "admin"
    service = SubscriptionAdmin(gateway.stores.subscriptions)
    audit = AuditTrail(gateway.stores.audit, gateway.clock)
    rid, method = request.request_id, request.method
    route = f"{method} {request.path}"
    if parts == ["audit"]:
        if method != "GET":
            raise MethodNotAllowed(f"{method} is not supported here.", headers={"Allow": "GET"})
        entries = await audit.recent(_limit(request.query.get("limit")), request.query.get("subscription") or None)
        return _json(200, {"data": entries}, rid)
    if parts == ["subscriptions"]:
        if method == "POST":
            fields = _body(request)
            created = await service.create(fields)
            await audit.record(actor, "create", route, str(created["id"]), fields)
            return _json(201, created, rid)
        if method == "GET":
            return _json(200, {"data": await service.list()}, rid)
        raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET, POST"})
    if len(parts) == 2 and parts[0] == "subscriptions":
        if method == "GET":
            shown = await service.show(parts[1])
            sub = await gateway.stores.subscriptions.get(parts[1])
            if sub is not None and sub.budget is not None:
                shown["budget_status"] = await gateway.budgets.status(sub.id, sub.budget)
            return _json(200, shown, rid)
        if method == "PATCH":
            fields = _body(request)
            result = await service.update(parts[1], fields)
            gateway.authenticator.forget()
            await audit.record(actor, "update", route, parts[1], fields)
            return _json(200, result, rid)
        if method == "DELETE":
            await service.delete(parts[1])
            gateway.authenticator.forget()
            await audit.record(actor, "delete", route, parts[1])
            return GatewayResponse(204, {"x-request-id": rid})
        raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET, PATCH, DELETE"})
    if len(parts) == 3 and parts[0] == "subscriptions" and parts[2] == "regenerate":
        if method != "POST":
            raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "POST"})
        which = _body(request).get("key", "primary")
        result = await service.regenerate(parts[1], str(which))
        gateway.authenticator.forget()
        await audit.record(actor, "regenerate", route, parts[1], [f"{which}_key"])
        return _json(200, result, rid)
    if parts == ["backends"]:
        if method != "GET":
            raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET"})
        return _json(200, await backends_report(gateway), rid)
    if parts == ["stats"]:
        if method != "GET":
            raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET"})
        return _json(200, stats_report(gateway), rid)
    if len(parts) == 2 and parts[0] == "requests":
        if method != "GET":
            raise MethodNotAllowed(f"{clip(method, 20)} is not supported here.", headers={"Allow": "GET"})
        at, hours = lookup_window(request.query.get("at"), request.query.get("hours"))
        found = await gateway.prompt_log.find(parts[1], at=at, hours=hours)
        if found is None:
            raise NotFound(f"No audit-log record of request {clip(parts[1])}.", code="record_not_found")
        return _json(200, found, rid)
    raise NotFound(f"No such admin route: {clip(method, 20)} {clip(request.path)}", code="route_not_found")


def lookup_window(at: str | None, hours: str | None) -> tuple[float | None, int | None]:
    """The `at` and `hours` of an audit-log look-up, checked (the HTTP route's query and the CLI's flags)."""
    when = parse_instant(at) if at else None
    if at and when is None:
        raise BadRequest("'at' must be an ISO 8601 time or epoch seconds.", param="at")
    if hours is None:
        return when, None
    if not hours.isdigit() or not 0 <= int(hours) <= 24 * 31:
        raise BadRequest("'hours' must be a whole number from 0 to 744.", param="hours")
    return when, int(hours)
