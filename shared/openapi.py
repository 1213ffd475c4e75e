"""The gateway's own routes as an OpenAPI 3.1 description, served at `GET /openapi.json`.

Written by hand from the routes `function_app.py` registers and the checks in
`shared.api` and `shared.admin`: what a caller may send and every status a
route may answer. The fuzz suite (tests/test_fuzz.py, `python -m bench.fuzz`)
reads it to know which routes exist and which statuses are documented, so a
route added without a line here fails there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.config import Settings

ENVELOPE = {"$ref": "#/components/schemas/Error"}
# The 5xx a caller may see, each in the envelope: a backend failed mid-stream (502), no backend or no
# storage (503, with Retry-After), and nothing else. A 500 is a bug.
SERVER_ERRORS = ("502", "503", "504")


def _errors(*statuses: str) -> dict[str, Any]:
    described = {
        "400": "invalid body, field or parameter",
        "401": "missing or wrong key",
        "403": "suspended, expired, deployment not allowed, or quota spent",
        "404": "unknown route, deployment or record",
        "405": "method not supported on this route",
        "413": "body larger than this operation's limit",
        "429": "limits reached (Retry-After)",
        "502": "a backend failed after the answer began",
        "503": "no backend available, or storage unavailable (Retry-After)",
        "504": "the backend did not answer in time",
    }
    return {s: {"description": described[s], "content": {"application/json": {"schema": ENVELOPE}}} for s in statuses}


def _ok(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


_API_ERRORS = ("400", "401", "403", "404", "405", "413", "429", "502", "503", "504")
_ADMIN_ERRORS = ("400", "401", "404", "405", "503")
_KEY: list[dict[str, list[str]]] = [{"apiKey": []}, {"subscriptionKey": []}, {"bearer": []}]
_ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}]

_CHAT = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string", "maxLength": 256},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {"role": {"type": "string"}, "content": {"type": ["string", "array", "null"]}},
            },
        },
        "stream": {"type": "boolean"},
        "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
    },
}
_EMBEDDINGS = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": {"type": "string", "maxLength": 256},
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                },
            ]
        },
    },
}
_SUBSCRIPTION_FIELDS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "state": {"enum": ["active", "suspended"]},
        "expires_at": {"type": ["string", "number", "null"], "description": "ISO 8601 or epoch, years 2000-2200"},
        "allowed_deployments": {"type": ["array", "null"], "items": {"type": "string", "minLength": 1}},
        "cache_opt_out": {"type": "boolean"},
        "tokens_per_minute": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**53 - 1},
        "requests_per_minute": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**53 - 1},
        "token_quota": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**53 - 1},
        "token_quota_period": {"enum": ["hourly", "daily", "weekly", "monthly", None]},
    },
}


def _operation(
    summary: str, security: list[dict[str, list[str]]] | None, ok: dict[str, Any], errors: tuple[str, ...], **more: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**ok, **_errors(*errors)}, **more}
    if security is not None:
        operation["security"] = security
    return operation


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _proxy(summary: str, schema: dict[str, Any], *, azure: bool) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    if azure:
        parameters = [
            {"name": "deployment", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "api-version", "in": "query", "required": False, "schema": {"type": "string"}},
        ]
    ok = {"200": _ok("the backend's answer (a stream of server-sent events when stream is true)")}
    return {
        "post": _operation(summary, _KEY, ok, _API_ERRORS, requestBody=_body(schema), parameters=parameters),
    }


def description(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI document; `settings` names the deployments callers may use."""
    deployments = sorted(settings.deployments) if settings is not None else []
    paths: dict[str, Any] = {}
    for prefix in ("/openai/v1", "/v1"):
        paths[f"{prefix}/chat/completions"] = _proxy("chat completion (OpenAI shape)", _CHAT, azure=False)
        paths[f"{prefix}/embeddings"] = _proxy("embeddings (OpenAI shape)", _EMBEDDINGS, azure=False)
    paths["/openai/deployments/{deployment}/chat/completions"] = _proxy(
        "chat completion (Azure shape)", _CHAT, azure=True
    )
    paths["/openai/deployments/{deployment}/embeddings"] = _proxy("embeddings (Azure shape)", _EMBEDDINGS, azure=True)
    period = {"name": "period", "in": "query", "schema": {"enum": ["hourly", "daily", "weekly", "monthly"]}}
    paths["/usage"] = {
        "get": _operation(
            "the calling subscription's usage and limits",
            _KEY,
            {"200": _ok("usage")},
            ("400", "401", "403", "405", "503"),
            parameters=[period],
        )
    }
    for prefix in ("/openai/v1", "/openai", "/v1"):
        paths[f"{prefix}/models"] = {
            "get": _operation("the deployments this caller may use", _KEY, {"200": _ok("model list")}, _API_ERRORS)
        }
        model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
        paths[f"{prefix}/models/{{model}}"] = {
            "get": _operation("one deployment", _KEY, {"200": _ok("model")}, _API_ERRORS, parameters=[model])
        }
    html = {"200": _ok("the page", {"type": "string"}, "text/html")}
    paths["/chat/"] = {"get": _operation("the chat page (its scripts beside it)", None, html, ("404", "405"))}
    paths["/dashboard/"] = {"get": _operation("the operators' dashboard", None, html, ("404", "405"))}
    paths["/"] = {"get": _operation("redirects to /chat/", None, {"302": {"description": "to /chat/"}}, ("405",))}
    paths["/health"] = {"get": _operation("liveness", None, {"200": _ok("ok")}, ("503",))}
    paths["/openapi.json"] = {"get": _operation("this description", None, {"200": _ok("OpenAPI 3.1")}, ("503",))}
    paths["/metrics"] = {
        "get": _operation(
            "Prometheus text (GATEWAY_METRICS_ENDPOINT)",
            _ADMIN,
            {"200": _ok("metrics", {"type": "string"}, "text/plain")},
            ("401", "404", "503"),
        )
    }
    sub_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    admin = "/gateway/admin"
    paths[f"{admin}/subscriptions"] = {
        "get": _operation("list subscriptions", _ADMIN, {"200": _ok("subscriptions")}, _ADMIN_ERRORS),
        "post": _operation(
            "create a subscription (keys shown once)",
            _ADMIN,
            {"201": _ok("the subscription and its keys")},
            _ADMIN_ERRORS,
            requestBody=_body({**_SUBSCRIPTION_FIELDS, "required": ["name"]}),
        ),
    }
    paths[f"{admin}/subscriptions/{{id}}"] = {
        "get": _operation("show", _ADMIN, {"200": _ok("subscription")}, _ADMIN_ERRORS, parameters=[sub_id]),
        "patch": _operation(
            "change",
            _ADMIN,
            {"200": _ok("subscription")},
            _ADMIN_ERRORS,
            parameters=[sub_id],
            requestBody=_body(_SUBSCRIPTION_FIELDS),
        ),
        "delete": _operation("delete", _ADMIN, {"204": {"description": "deleted"}}, _ADMIN_ERRORS, parameters=[sub_id]),
    }
    paths[f"{admin}/subscriptions/{{id}}/regenerate"] = {
        "post": _operation(
            "regenerate a key (shown once)",
            _ADMIN,
            {"200": _ok("the new key")},
            _ADMIN_ERRORS,
            parameters=[sub_id],
            requestBody=_body({"type": "object", "properties": {"key": {"enum": ["primary", "secondary"]}}}),
        )
    }
    paths[f"{admin}/backends"] = {"get": _operation("backend state", _ADMIN, {"200": _ok("backends")}, _ADMIN_ERRORS)}
    paths[f"{admin}/stats"] = {"get": _operation("instance counters", _ADMIN, {"200": _ok("stats")}, _ADMIN_ERRORS)}
    request_id = {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths[f"{admin}/requests/{{request_id}}"] = {
        "get": _operation(
            "a request's prompt audit-log record",
            _ADMIN,
            {"200": _ok("the record")},
            _ADMIN_ERRORS,
            parameters=[
                request_id,
                {"name": "at", "in": "query", "schema": {"type": "string"}},
                {"name": "hours", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 744}},
            ],
        )
    }
    paths[f"{admin}/audit"] = {
        "get": _operation(
            "the audit trail of admin changes, newest first",
            _ADMIN,
            {"200": _ok("audit entries")},
            _ADMIN_ERRORS,
            parameters=[
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                {"name": "subscription", "in": "query", "schema": {"type": "string"}},
            ],
        )
    }
    time_param = {"type": "string", "description": "ISO 8601 or epoch seconds, years 2000-2200"}
    paths[f"{admin}/usage"] = {
        "get": _operation(
            "usage by subscription, deployment or backend (at most 400 days)",
            _ADMIN,
            {"200": _ok("report")},
            _ADMIN_ERRORS,
            parameters=[
                {"name": "from", "in": "query", "schema": time_param},
                {"name": "to", "in": "query", "schema": time_param},
                {"name": "group_by", "in": "query", "schema": {"enum": ["subscription", "deployment", "backend"]}},
                {"name": "subscription", "in": "query", "schema": {"type": "string", "maxLength": 200}},
            ],
        )
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Azure OpenAI gateway",
            "version": "1",
            "description": "Every error is the OpenAI envelope. Deployments: " + (", ".join(deployments) or "-"),
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "code", "param"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "code": {"type": ["string", "null"]},
                                "param": {"type": ["string", "null"]},
                            },
                        }
                    },
                }
            },
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
                "subscriptionKey": {"type": "apiKey", "in": "header", "name": "Ocp-Apim-Subscription-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "adminKey": {"type": "apiKey", "in": "header", "name": "x-admin-key"},
            },
        },
    }
