"""The gateway's own routes as an OpenAPI 3.1 description, served at `GET /openapi.json`.

The forwarded operations are generated from `shared.surface.SPECS` in every
path shape (Azure `/openai/deployments/{deployment}/...` and `/openai/...`
with `?api-version=`, OpenAI `/openai/v1/...` and `/v1/...`), with a request
schema per operation (JSON, or multipart/form-data for uploads) kept here;
the pages come from `shared.pages.MANIFEST`; the model list, `/usage` and the
admin API are written by hand from `shared.api`, `shared.deployments` and
`shared.admin.http`. Every error response names the envelope schema. The
fuzz suite (tests/test_fuzz.py, `python -m bench.fuzz`) reads this to know
which routes exist, and tests/test_openapi.py fails when a route is served
without a description here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.models import Operation
from shared.pages import MANIFEST, REDIRECTS
from shared.surface import FORWARD_QUERY, LISTS, SPECS, Body, Relay, Spec

if TYPE_CHECKING:
    from shared.config import Settings

ENVELOPE = {"$ref": "#/components/schemas/Error"}
# The 5xx a caller may see, each in the envelope: a backend failed mid-stream (502), no backend, no backend
# holding a stored object, or no storage (503, with Retry-After), the backend too slow (504), and nothing else.
# A 500 (or a 501) is a bug.
SERVER_ERRORS = ("502", "503", "504")
# The shapes every forwarded operation is served in: (prefix, Azure shape with ?api-version=).
AZURE_SCOPED = "/openai/deployments/{deployment}"
AZURE_ACCOUNT = "/openai"
V1_PREFIXES = ("/openai/v1", "/v1")


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
        "503": "no backend available, the backend holding the object unavailable, or storage unavailable (Retry-After)",
        "504": "the backend did not answer in time",
    }
    return {s: {"description": described[s], "content": {"application/json": {"schema": ENVELOPE}}} for s in statuses}


def _ok(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


_API_ERRORS = ("400", "401", "403", "404", "405", "413", "429", "502", "503", "504")
_ADMIN_ERRORS = ("400", "401", "404", "405", "503")
_KEY: list[dict[str, list[str]]] = [{"apiKey": []}, {"subscriptionKey": []}, {"bearer": []}]
_ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}]

_COUNT = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_MODEL = {"type": "string", "minLength": 1, "maxLength": 256, "description": "the deployment"}
_STREAM = {
    "stream": {"type": "boolean"},
    "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
}
_CHAT = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": _MODEL,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {"role": {"type": "string"}, "content": {"type": ["string", "array", "null"]}},
            },
        },
        **_STREAM,
        "max_tokens": _COUNT,
        "max_completion_tokens": _COUNT,
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
    },
}
_EMBEDDINGS = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": _MODEL,
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
_COMPLETIONS = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "model": _MODEL,
        "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        **_STREAM,
        "max_tokens": _COUNT,
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
    },
}
_IMAGE_GENERATIONS = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "model": _MODEL,
        "prompt": {"type": "string", "minLength": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 10},
        "size": {"type": "string"},
        "quality": {"type": "string"},
        "response_format": {"enum": ["url", "b64_json"]},
    },
}
_SPEECH = {
    "type": "object",
    "required": ["input", "voice"],
    "properties": {
        "model": _MODEL,
        "input": {"type": "string", "minLength": 1, "maxLength": 4096},
        "voice": {"type": "string", "minLength": 1},
        "response_format": {"enum": ["mp3", "opus", "aac", "flac", "wav", "pcm"]},
        "speed": {"type": "number", "minimum": 0.25, "maximum": 4},
    },
}
_RESPONSES_CREATE = {
    "type": "object",
    "anyOf": [{"required": ["input"]}, {"required": ["previous_response_id"]}],
    "properties": {
        "model": _MODEL,
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "object"}}]},
        "instructions": {"type": ["string", "null"]},
        "previous_response_id": {"type": "string", "minLength": 1},
        "stream": {"type": "boolean"},
        "background": {"type": "boolean"},
        "store": {"type": "boolean"},
        "max_output_tokens": _COUNT,
    },
}
_BATCHES_CREATE = {
    "type": "object",
    "required": ["input_file_id"],
    "properties": {
        "input_file_id": {"type": "string", "minLength": 1},
        "endpoint": {"type": "string"},
        "completion_window": {"type": "string"},
        "metadata": {"type": ["object", "null"]},
    },
}
_UPLOAD = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
_AUDIO_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "model": _MODEL,
        "file": _UPLOAD,
        "language": {"type": "string"},
        "prompt": {"type": "string"},
        "response_format": {"enum": ["json", "text", "srt", "verbose_json", "vtt"]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
_IMAGE_EDITS_FORM = {
    "type": "object",
    "required": ["image", "prompt"],
    "properties": {
        "model": _MODEL,
        "image": _UPLOAD,
        "mask": _UPLOAD,
        "prompt": {"type": "string", "minLength": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 10},
        "size": {"type": "string"},
        "response_format": {"enum": ["url", "b64_json"]},
    },
}
_FILES_FORM = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": _UPLOAD,
        "purpose": {"enum": ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]},
    },
}
# The body each operation takes, by its kind in `shared.surface` (a new operation without one fails the build).
JSON_BODIES: dict[Operation, dict[str, Any]] = {
    Operation.CHAT: _CHAT,
    Operation.EMBEDDINGS: _EMBEDDINGS,
    Operation.COMPLETIONS: _COMPLETIONS,
    Operation.IMAGE_GENERATIONS: _IMAGE_GENERATIONS,
    Operation.SPEECH: _SPEECH,
    Operation.RESPONSES_CREATE: _RESPONSES_CREATE,
    Operation.BATCHES_CREATE: _BATCHES_CREATE,
}
FORMS: dict[Operation, dict[str, Any]] = {
    Operation.IMAGE_EDITS: _IMAGE_EDITS_FORM,
    Operation.TRANSCRIPTIONS: _AUDIO_FORM,
    Operation.TRANSLATIONS: _AUDIO_FORM,
    Operation.FILES_CREATE: _FILES_FORM,
}
_SUMMARIES: dict[Operation, str] = {
    Operation.CHAT: "chat completion",
    Operation.EMBEDDINGS: "embeddings",
    Operation.COMPLETIONS: "legacy text completion",
    Operation.IMAGE_GENERATIONS: "generate images",
    Operation.IMAGE_EDITS: "edit an image (upload)",
    Operation.TRANSCRIPTIONS: "transcribe audio (upload)",
    Operation.TRANSLATIONS: "translate audio to English (upload)",
    Operation.SPEECH: "text to speech (audio bytes)",
    Operation.RESPONSES_CREATE: "create a response (Responses API)",
    Operation.RESPONSES_RETRIEVE: "a stored response",
    Operation.RESPONSES_DELETE: "delete a stored response",
    Operation.RESPONSES_INPUT_ITEMS: "a stored response's input items",
    Operation.RESPONSES_CANCEL: "cancel a background response",
    Operation.FILES_CREATE: "upload a file",
    Operation.FILES_LIST: "list files",
    Operation.FILES_RETRIEVE: "a file's metadata",
    Operation.FILES_DELETE: "delete a file",
    Operation.FILES_CONTENT: "a file's content (bytes)",
    Operation.BATCHES_CREATE: "create a batch",
    Operation.BATCHES_LIST: "list batches",
    Operation.BATCHES_RETRIEVE: "a batch",
    Operation.BATCHES_CANCEL: "cancel a batch",
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


def _request_body(spec: Spec, *, model_required: bool) -> dict[str, Any] | None:
    """The body an operation takes; in the OpenAI shape `model` names the deployment, so it is required there."""
    if spec.body is Body.NONE:
        return None
    schema = dict(JSON_BODIES[spec.operation] if spec.body is Body.JSON else FORMS[spec.operation])
    if model_required and "model" in schema["properties"]:
        schema["required"] = sorted({*schema.get("required", ()), "model"})
    if spec.body is Body.JSON:
        return _body(schema)
    parts = [name for name, field in schema["properties"].items() if field is _UPLOAD]
    encoding = {name: {"contentType": "application/octet-stream"} for name in parts}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema, "encoding": encoding}}}


def _answers(spec: Spec) -> dict[str, Any]:
    if spec.relay is Relay.BINARY:
        return {"200": _ok("the backend's bytes, passed through as they come", _UPLOAD, "application/octet-stream")}
    answer = _ok("the backend's answer")
    if spec.relay is not None:
        answer["description"] += " (server-sent events when the body's stream is true)"
        answer["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    if spec.operation in (Operation.TRANSCRIPTIONS, Operation.TRANSLATIONS):
        answer["description"] += " (plain text for response_format text, srt or vtt)"
        answer["content"]["text/plain"] = {"schema": {"type": "string"}}
    return {"200": answer}


_DEPLOYMENT = {"name": "deployment", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_API_VERSION = {
    "name": "api-version",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "pattern": "^[0-9a-zA-Z.-]{1,40}$"},
}
_OBJECT_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "a response, file or batch id as Azure makes it; anything else is not a route (404)",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"},
}


def _forwarded(spec: Spec, prefix: str, *, azure: bool) -> tuple[str, dict[str, Any]]:
    """One operation in one path shape: its path template and its operation object."""
    parameters: list[dict[str, Any]] = []
    if prefix == AZURE_SCOPED:
        parameters.append(_DEPLOYMENT)
    if "{id}" in spec.path:
        parameters.append(_OBJECT_ID)
    if azure:
        parameters.append(_API_VERSION)
    if spec.method == "GET":
        names = FORWARD_QUERY if spec.operation in LISTS or "{id}" in spec.path else ()
        parameters += [{"name": name, "in": "query", "schema": {"type": "string"}} for name in names]
    more: dict[str, Any] = {"parameters": parameters, "operationId": f"{spec.operation.value}@{prefix}"}
    needs_model = spec.deployment_scoped or spec.operation is Operation.RESPONSES_CREATE
    body = _request_body(spec, model_required=needs_model and prefix != AZURE_SCOPED)
    if body is not None:
        more["requestBody"] = body
    summary = f"{_SUMMARIES[spec.operation]} ({'Azure' if azure else 'OpenAI'} shape)"
    return f"{prefix}/{spec.path}", _operation(summary, _KEY, _answers(spec), _API_ERRORS, **more)


def forwarded_paths() -> dict[str, dict[str, Any]]:
    """Every operation of `shared.surface.SPECS` in each of its path shapes."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in SPECS:
        shapes = [(AZURE_SCOPED if spec.deployment_scoped else AZURE_ACCOUNT, True)]
        shapes += [(prefix, False) for prefix in V1_PREFIXES]
        for prefix, azure in shapes:
            path, operation = _forwarded(spec, prefix, azure=azure)
            paths.setdefault(path, {})[spec.method.lower()] = operation
    return paths


def _page_paths() -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for path, asset in MANIFEST.items():
        ok = {"200": _ok("the file", {"type": "string"}, asset.content_type.split(";")[0])}
        ok["304"] = {"description": "unchanged (If-None-Match)"}
        paths[path] = {"get": _operation(f"a file of the browser pages ({asset.file})", None, ok, ("404", "405"))}
    for path, target in REDIRECTS.items():
        paths[path] = {"get": _operation(f"redirects to {target}", None, {"302": {"description": target}}, ("405",))}
    return paths


def _gateway_paths() -> dict[str, dict[str, Any]]:
    """The gateway's own answers: model list, usage, health, this description, metrics."""
    paths: dict[str, dict[str, Any]] = {}
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
    return paths


def _admin_paths() -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
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
    return paths


def description(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI document; `settings` names the deployments callers may use."""
    deployments = sorted(settings.deployments) if settings is not None else []
    paths = {**forwarded_paths(), **_gateway_paths(), **_page_paths(), **_admin_paths()}
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
