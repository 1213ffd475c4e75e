"""The OpenAI-compatible surface: which paths mean which operation, and what makes a request body valid.

Azure shape: `/openai/deployments/{deployment}/chat/completions|embeddings?api-version=...`.
OpenAI shape: `/openai/v1/...` and `/v1/...`, the deployment taken from `model`.
The model list (`/v1/models`, `/openai/v1/models`, `/openai/models`, and `.../models/{id}`)
is the gateway's own answer (`shared.deployments`), not a call to a backend.
Every other operation's path and body are read in `shared.surface`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared import jsonbody
from shared.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from shared.logs import clip
from shared.models import DEFAULT_API_VERSION, GatewayRequest, Operation

_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings)/?$")
_OPENAI_PATH = re.compile(r"^(?:/openai)?/v1/(chat/completions|embeddings)/?$")
_API_VERSION = re.compile(r"^[0-9a-zA-Z.-]{1,40}$")
MAX_DEPLOYMENT_CHARS = 256  # Azure allows 64; the rest is room, not a promise
MAX_TOKENS = 2**31 - 1  # what the backends take as an int32
MAX_N = 128
_MODELS_PATH = re.compile(r"^/(?:openai/v1|openai|v1)/models(?:/(?P<model>[^/]+))?/?$")


# Operations whose calls a `stream: true` body turns into a stream of events.
STREAMABLE = frozenset({Operation.CHAT, Operation.COMPLETIONS, Operation.RESPONSES_CREATE})


@dataclass(frozen=True, slots=True)
class ApiCall:
    operation: Operation
    deployment: str
    body: dict[str, Any]
    api_version: str

    @property
    def stream(self) -> bool:
        return self.operation in STREAMABLE and self.body.get("stream") is True


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
            f"{clip(request.method, 20)} is not supported on {clip(request.path)}; use GET.", headers={"Allow": "GET"}
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
            raise NotFound(f"No such route: {clip(request.method, 20)} {clip(path)}", code="route_not_found")
        operation, deployment = Operation(match.group(1)), None
    if request.method != "POST":
        raise MethodNotAllowed(
            f"{clip(request.method, 20)} is not supported on {clip(path)}; use POST.", headers={"Allow": "POST"}
        )
    return operation, deployment


def parse(request: GatewayRequest, operation: Operation, deployment: str | None, max_body: int) -> ApiCall:
    """The body parsed and every field the gateway reads checked for its type: a 400 here, not a 500 later."""
    if len(request.body) > max_body:
        raise PayloadTooLarge(f"The request body is larger than the gateway's limit of {max_body} bytes.")
    body = jsonbody.load_object(request.body)
    if deployment is None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required: the name of a deployment.", param="model")
        if len(model) > MAX_DEPLOYMENT_CHARS:
            raise BadRequest(f"'model' is longer than {MAX_DEPLOYMENT_CHARS} characters.", param="model")
        deployment = model
    elif "model" in body and not isinstance(body["model"], str):
        raise BadRequest("'model' must be a string.", param="model")
    api_version = request.query.get("api-version") or DEFAULT_API_VERSION
    if not _API_VERSION.match(api_version):
        raise BadRequest("Invalid api-version.", param="api-version")
    if operation is Operation.CHAT:
        _check_chat(body)
    else:
        _check_embeddings(body)
    if "user" in body and not isinstance(body["user"], str):  # the end user's id, forwarded: a string in the spec
        raise BadRequest("'user' must be a string.", param="user")
    for name, ceiling in (("max_tokens", MAX_TOKENS), ("max_completion_tokens", MAX_TOKENS), ("n", MAX_N)):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling):
            raise BadRequest(f"'{name}' must be an integer from 1 to {ceiling}.", param=name)
    return ApiCall(operation, deployment, body, api_version)


def _check_chat(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required: a non-empty list.", param="messages")
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("Each item of 'messages' must be an object.", param="messages")
        if not isinstance(message.get("role"), str):
            raise BadRequest("Each message needs a 'role' string.", param="messages")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest("A message's 'content' must be a string, a list of parts or null.", param="messages")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise BadRequest("'stream_options' must be an object.", param="stream_options")
        if "include_usage" in options and not isinstance(options["include_usage"], bool):
            raise BadRequest("'stream_options.include_usage' must be true or false.", param="stream_options")


def _token_ids(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def _check_embeddings(body: dict[str, Any]) -> None:
    if "input" not in body:
        raise BadRequest("'input' is required.", param="input")
    value = body["input"]
    valid = (
        (isinstance(value, str) and value != "")
        or _token_ids(value)
        or (
            isinstance(value, list)
            and bool(value)
            and (all(isinstance(v, str) and v for v in value) or all(_token_ids(v) for v in value))
        )
    )
    if not valid:
        raise BadRequest(
            "'input' must be a non-empty string, a list of strings, a list of token ids or a list of such lists.",
            param="input",
        )
    if body.get("stream") is True:
        raise BadRequest("Embeddings cannot be streamed.", param="stream")


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage_requested(body: dict[str, Any]) -> bytes:
    """The body to send upstream for a stream: ask the backend for its usage chunk."""
    options = dict(body.get("stream_options") or {})
    options["include_usage"] = True
    return json.dumps({**body, "stream_options": options}, separators=(",", ":")).encode()
