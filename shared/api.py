"""The OpenAI-compatible surface: which paths mean which operation, and what makes a request body valid.

Azure shape: `/openai/deployments/{deployment}/chat/completions|embeddings?api-version=...`.
OpenAI shape: `/openai/v1/...` and `/v1/...`, the deployment taken from `model`.
The model list (`/v1/models`, `/openai/v1/models`, `/openai/models`, and `.../models/{id}`)
is the gateway's own answer (`shared.deployments`), not a call to a backend.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from shared.models import DEFAULT_API_VERSION, GatewayRequest, Operation

_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings)/?$")
_OPENAI_PATH = re.compile(r"^(?:/openai)?/v1/(chat/completions|embeddings)/?$")
_API_VERSION = re.compile(r"^[0-9a-zA-Z.-]{1,40}$")
_MODELS_PATH = re.compile(r"^/(?:openai/v1|openai|v1)/models(?:/(?P<model>[^/]+))?/?$")


@dataclass(frozen=True, slots=True)
class ApiCall:
    operation: Operation
    deployment: str
    body: dict[str, Any]
    api_version: str

    @property
    def stream(self) -> bool:
        return self.operation is Operation.CHAT and self.body.get("stream") is True


@dataclass(frozen=True, slots=True)
class ModelsCall:
    """A request for the model list (`model` None) or for one model."""

    model: str | None


def models_route(request: GatewayRequest) -> ModelsCall | None:
    """The model-list operation a path names, or None when the path is not one of its shapes."""
    match = _MODELS_PATH.match(request.path)
    if not match:
        return None
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed(
            f"{request.method} is not supported on {request.path}; use GET.", headers={"Allow": "GET"}
        )
    return ModelsCall(match.group("model"))


def route(request: GatewayRequest) -> tuple[Operation, str | None]:
    """The operation and (Azure shape) deployment a path names; 404 or 405 otherwise."""
    path = request.path
    match = _AZURE_PATH.match(path)
    if match:
        operation, deployment = Operation(match.group(2)), match.group(1)
    else:
        match = _OPENAI_PATH.match(path)
        if not match:
            raise NotFound(f"No such route: {request.method} {path}", code="route_not_found")
        operation, deployment = Operation(match.group(1)), None
    if request.method != "POST":
        raise MethodNotAllowed(f"{request.method} is not supported on {path}; use POST.", headers={"Allow": "POST"})
    return operation, deployment


def parse(request: GatewayRequest, operation: Operation, deployment: str | None, max_body: int) -> ApiCall:
    if len(request.body) > max_body:
        raise PayloadTooLarge(f"The request body is larger than the gateway's limit of {max_body} bytes.")
    try:
        body = json.loads(request.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    if deployment is None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required: the name of a deployment.", param="model")
        deployment = model
    api_version = request.query.get("api-version") or DEFAULT_API_VERSION
    if not _API_VERSION.match(api_version):
        raise BadRequest("Invalid api-version.", param="api-version")
    if operation is Operation.CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' is required: a non-empty list.", param="messages")
        if not all(isinstance(m, dict) for m in messages):
            raise BadRequest("Each item of 'messages' must be an object.", param="messages")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise BadRequest("'stream' must be true or false.", param="stream")
    else:
        if "input" not in body:
            raise BadRequest("'input' is required.", param="input")
        if body.get("stream") is True:
            raise BadRequest("Embeddings cannot be streamed.", param="stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BadRequest(f"'{name}' must be a positive integer.", param=name)
    return ApiCall(operation, deployment, body, api_version)


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage_requested(body: dict[str, Any]) -> bytes:
    """The body to send upstream for a stream: ask the backend for its usage chunk."""
    options = dict(body.get("stream_options") or {})
    options["include_usage"] = True
    return json.dumps({**body, "stream_options": options}, separators=(",", ":")).encode()
