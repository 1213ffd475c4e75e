"""Every operation the gateway forwards: its paths in both shapes, its body, how its answer flows, the ids it names.

Azure shape, with `?api-version=`:

    /openai/deployments/{deployment}/<operation>     chat/completions, embeddings, completions, images/generations,
                                                     images/edits, audio/transcriptions, audio/translations,
                                                     audio/speech
    /openai/responses[/{id}[/input_items|/cancel]]   stored objects of the resource: responses, files, batches
    /openai/files[/{id}[/content]]                   (a response's deployment in the body's `model`)
    /openai/batches[/{id}[/cancel]]

OpenAI shape, `/v1/...` and `/openai/v1/...`: the same operations, the
deployment always named by `model` (a JSON field, or a form field of a
multipart upload). Anything else answers 404 in the envelope, listing what
is supported. The Realtime API (WebSockets) cannot be served by an Azure
Functions HTTP trigger; the README says what to use instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared import jsonbody
from shared.api import ApiCall
from shared.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from shared.models import DEFAULT_API_VERSION, GatewayRequest, Operation

if TYPE_CHECKING:
    from shared.config import Settings


class Body(StrEnum):
    JSON = "json"
    MULTIPART = "multipart"
    NONE = "none"


class Relay(StrEnum):
    """How an answer reaches the caller when it is not one JSON body read whole."""

    EVENTS = "events"  # server-sent events ending in [DONE] (chat, completions), when `stream` is true
    TYPED = "typed"  # the Responses API's typed events, when `stream` is true
    BINARY = "binary"  # bytes passed through as they come, always (speech, file contents)


class Kind(StrEnum):
    """Objects that live in one Azure OpenAI resource: calls naming them must reach that resource."""

    RESPONSE = "response"
    FILE = "file"
    BATCH = "batch"


MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Spec:
    operation: Operation
    method: str
    path: str  # under the shape's prefix; "{id}" names a stored object
    body: Body = Body.JSON
    deployment_scoped: bool = False
    relay: Relay | None = None
    creates: Kind | None = None  # the answer's `id` is a new object of this kind
    target: Kind | None = None  # the object "{id}" names
    max_body: int | None = None  # None: GATEWAY_MAX_BODY_BYTES
    file_parts: tuple[str, ...] = ()  # an upload's form names for its file, one of which it must carry

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.escape(self.path).replace(re.escape("{id}"), "([^/]+)") + "/?$")


_O = Operation
_FILE, _IMAGE = ("file",), ("image", "image[]")
SPECS: tuple[Spec, ...] = (
    Spec(_O.CHAT, "POST", "chat/completions", deployment_scoped=True, relay=Relay.EVENTS),
    Spec(_O.EMBEDDINGS, "POST", "embeddings", deployment_scoped=True),
    Spec(_O.COMPLETIONS, "POST", "completions", deployment_scoped=True, relay=Relay.EVENTS),
    Spec(_O.IMAGE_GENERATIONS, "POST", "images/generations", deployment_scoped=True),
    # Uploads: Azure takes audio up to 25 MB, image edits up to 50 MB and files up to 512 MB.
    Spec(_O.IMAGE_EDITS, "POST", "images/edits", Body.MULTIPART, True, max_body=50 * MIB, file_parts=_IMAGE),
    Spec(_O.TRANSCRIPTIONS, "POST", "audio/transcriptions", Body.MULTIPART, True, max_body=25 * MIB, file_parts=_FILE),
    Spec(_O.TRANSLATIONS, "POST", "audio/translations", Body.MULTIPART, True, max_body=25 * MIB, file_parts=_FILE),
    Spec(_O.SPEECH, "POST", "audio/speech", deployment_scoped=True, relay=Relay.BINARY),
    Spec(_O.RESPONSES_CREATE, "POST", "responses", relay=Relay.TYPED, creates=Kind.RESPONSE),
    Spec(_O.RESPONSES_RETRIEVE, "GET", "responses/{id}", Body.NONE, target=Kind.RESPONSE),
    Spec(_O.RESPONSES_DELETE, "DELETE", "responses/{id}", Body.NONE, target=Kind.RESPONSE),
    Spec(_O.RESPONSES_INPUT_ITEMS, "GET", "responses/{id}/input_items", Body.NONE, target=Kind.RESPONSE),
    Spec(_O.RESPONSES_CANCEL, "POST", "responses/{id}/cancel", Body.NONE, target=Kind.RESPONSE),
    Spec(_O.FILES_CREATE, "POST", "files", Body.MULTIPART, creates=Kind.FILE, max_body=512 * MIB, file_parts=_FILE),
    Spec(_O.FILES_LIST, "GET", "files", Body.NONE),
    Spec(_O.FILES_RETRIEVE, "GET", "files/{id}", Body.NONE, target=Kind.FILE),
    Spec(_O.FILES_DELETE, "DELETE", "files/{id}", Body.NONE, target=Kind.FILE),
    Spec(_O.FILES_CONTENT, "GET", "files/{id}/content", Body.NONE, relay=Relay.BINARY, target=Kind.FILE),
    Spec(_O.BATCHES_CREATE, "POST", "batches", creates=Kind.BATCH),
    Spec(_O.BATCHES_LIST, "GET", "batches", Body.NONE),
    Spec(_O.BATCHES_RETRIEVE, "GET", "batches/{id}", Body.NONE, target=Kind.BATCH),
    Spec(_O.BATCHES_CANCEL, "POST", "batches/{id}/cancel", Body.NONE, target=Kind.BATCH),
)
_PATTERNS = tuple((spec, spec.pattern) for spec in SPECS)
LISTS = frozenset({Operation.FILES_LIST, Operation.BATCHES_LIST})
# Files and batches: objects of a resource that no deployment names.
FILES_AND_BATCHES = frozenset(op for op in Operation if op.value.startswith(("files.", "batches.")))
# Operations whose answers' `usage` is what the call used (a retrieved response's usage was charged when it was made).
METERED = frozenset(
    {
        Operation.CHAT,
        Operation.EMBEDDINGS,
        Operation.COMPLETIONS,
        Operation.RESPONSES_CREATE,
        Operation.IMAGE_GENERATIONS,
        Operation.IMAGE_EDITS,
        Operation.TRANSCRIPTIONS,
        Operation.TRANSLATIONS,
    }
)

_AZURE_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)/(.+)$")
_V1 = re.compile(r"^(?:/openai)?/v1/(.+)$")
_AZURE_ACCOUNT = re.compile(r"^/openai/((?:responses|files|batches)(?:/.*)?)$")
_REALTIME = re.compile(r"^(?:/openai(?:/deployments/[^/]+)?|/openai/v1|/v1)/realtime\b")
_API_VERSION = re.compile(r"^[0-9a-zA-Z.-]{1,40}$")
# Ids as Azure makes them (resp_..., file-..., batch_...): nothing that could change the upstream path ("..", "%").
_OBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
# Query parameters of list and retrieve calls that a backend may need; anything else stays here.
FORWARD_QUERY = ("limit", "after", "before", "order", "purpose", "include", "include[]")


@dataclass(frozen=True, slots=True)
class Route:
    spec: Spec
    deployment: str | None  # named in an Azure-shape path
    object_id: str | None  # the "{id}" of the path
    v1: bool  # the OpenAI shape: account paths go upstream under /openai/v1

    @property
    def operation(self) -> Operation:
        return self.spec.operation

    def upstream_path(self) -> str:
        """The path under a backend's `/openai/` of an account operation (deployment-scoped ones use the deployment)."""
        path = self.spec.path.replace("{id}", self.object_id or "")
        return f"v1/{path}" if self.v1 else path


def supported() -> str:
    """The supported operations, as a 404 lists them."""
    return ", ".join(f"{s.method} {s.path}" for s in SPECS) + ", GET models"


def _not_found(request: GatewayRequest) -> NotFound:
    method, path = request.method[:20], request.path[:200]
    if _REALTIME.match(request.path):
        return NotFound(
            "The Realtime API needs WebSockets, which this gateway (an Azure Functions HTTP app) does not serve; "
            "connect to Azure OpenAI directly. See the README.",
            code="realtime_not_supported",
        )
    return NotFound(
        f"No such route: {method} {path}. Supported under /openai/deployments/{{deployment}}/, /openai/, "
        f"/openai/v1/ and /v1/: {supported()}.",
        code="route_not_found",
    )


def _match(request: GatewayRequest, rest: str, *, scoped: bool | None) -> tuple[Spec, str | None] | None:
    """The spec `rest` names for this method (405 if only for another method); None if none names it."""
    allowed: list[str] = []
    for spec, pattern in _PATTERNS:
        if scoped is not None and spec.deployment_scoped is not scoped:
            continue
        found = pattern.match(rest)
        if found is None:
            continue
        object_id = found.group(1) if found.groups() else None
        if object_id is not None and (not _OBJECT_ID.match(object_id) or ".." in object_id):
            continue  # not an id: the route does not exist
        if spec.method == request.method:
            return spec, object_id
        allowed.append(spec.method)
    if allowed:
        methods = ", ".join(sorted(set(allowed)))
        raise MethodNotAllowed(
            f"{request.method[:20]} is not supported on {request.path[:200]}; use {methods}.",
            headers={"Allow": methods},
        )
    return None


def route(request: GatewayRequest) -> Route:
    """The operation a path names, with its deployment (Azure shape) and object id; 404 or 405 otherwise."""
    path = request.path
    if (found := _AZURE_DEPLOYMENT.match(path)) is not None:
        if (matched := _match(request, found.group(2), scoped=True)) is not None:
            return Route(matched[0], found.group(1), None, v1=False)
    elif (found := _V1.match(path)) is not None:
        if (matched := _match(request, found.group(1), scoped=None)) is not None:
            return Route(matched[0], None, matched[1], v1=True)
    elif (found := _AZURE_ACCOUNT.match(path)) is not None and (
        matched := _match(request, found.group(1), scoped=False)
    ) is not None:
        return Route(matched[0], None, matched[1], v1=False)
    raise _not_found(request)


def body_limit(spec: Spec, settings: Settings) -> int:
    """The largest body an operation takes: uploads their own limit, JSON bodies GATEWAY_BODY_LIMITS or the maximum."""
    return spec.max_body if spec.max_body is not None else settings.body_limit(spec.operation.value)


def limit_for(method: str, path: str, settings: Settings, *, ceiling: int) -> int:
    """How much of a request's body to read: its upload limit, else GATEWAY_MAX_BODY_BYTES up to `ceiling`."""
    probe = GatewayRequest(method, path, {}, {}, b"", "")
    try:
        spec = route(probe).spec
    except (NotFound, MethodNotAllowed):
        spec = None
    if spec is not None and spec.max_body is not None:
        return spec.max_body
    return min(settings.max_body_bytes, ceiling)


# --- bodies --------------------------------------------------------------------------------------

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def form_field(body: bytes, content_type: str, name: str) -> str | None:
    """A text field of a multipart/form-data body (the upload itself is never copied), or None."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        return None
    needle = f'name="{name}"'.encode()
    for part in body.split(b"--" + found.group(1).encode()):
        head, sep, value = part.partition(b"\r\n\r\n")
        if sep and needle in head and b"filename=" not in head:
            return value.removesuffix(b"\r\n").decode("utf-8", "replace")
    return None


# RFC 2046: 1 to 70 of these characters, not ending in a space.
_BOUNDARY_CHARS = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
# A part's header line: a field name, a colon, a value without control characters (UTF-8 file names allowed).
_PART_HEADER = re.compile(rb"^[!-9;-~]+:[\t\x20-\x7e\x80-\xff]*$")
_DISPOSITION = re.compile(rb'^content-disposition:[ \t]*form-data[ \t]*;(?:.*;)?[ \t]*name="([^"]*)"', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FormPart:
    name: str
    size: int


def _bad_form(why: str) -> BadRequest:
    return BadRequest(f"The multipart/form-data body cannot be read: {why}.", code="invalid_multipart")


def read_form(body: bytes, content_type: str) -> list[FormPart]:
    """The parts of a multipart/form-data body, checked as a backend's parser checks them (offsets only, no copy).

    A body a backend cannot parse is the caller's mistake: refused here with 400, it is never forwarded, so no
    backend answers it with a 500 that could count against it.
    """
    found = _BOUNDARY.search(content_type)
    if found is None or not _BOUNDARY_CHARS.match(found.group(1)):
        raise _bad_form("its Content-Type names no valid boundary")
    delimiter = b"--" + found.group(1).encode()
    if body.startswith(delimiter):
        at = len(delimiter)
    elif (first := body.find(b"\r\n" + delimiter)) >= 0:  # after a preamble
        at = first + 2 + len(delimiter)
    else:
        raise _bad_form("the boundary never occurs in it")
    parts: list[FormPart] = []
    while not body.startswith(b"--", at):  # the close delimiter ends the form; an epilogue may follow
        if not body.startswith(b"\r\n", at):
            raise _bad_form("a boundary is not followed by a line break")
        head_end = body.find(b"\r\n\r\n", at)
        if head_end < 0:
            raise _bad_form("a part has no end to its headers")
        lines = body[at + 2 : head_end].split(b"\r\n") if head_end > at else []
        if not all(_PART_HEADER.match(line) for line in lines):
            raise _bad_form("a part header is malformed")
        names = [m.group(1) for line in lines if (m := _DISPOSITION.match(line))]
        if len(names) != 1:
            raise _bad_form("a part has no Content-Disposition: form-data with a name")
        end = body.find(b"\r\n" + delimiter, head_end + 2)
        if end < 0:
            raise _bad_form("it is not closed by its boundary")
        parts.append(FormPart(names[0].decode("utf-8", "replace"), max(0, end - head_end - 4)))
        at = end + 2 + len(delimiter)
    return parts


def parse(request: GatewayRequest, route: Route, max_body: int) -> ApiCall:
    """A call of any operation but chat and embeddings (`shared.api.parse`): its deployment, its JSON if any."""
    spec = route.spec
    if len(request.body) > max_body:
        raise PayloadTooLarge(
            f"The request body is larger than the gateway's limit of {max_body} bytes for {spec.operation.value}."
        )
    body: dict[str, Any] = {}
    model: object = None
    if spec.body is Body.JSON:
        # The same parse as chat and embeddings: deep nesting, lone surrogates and NaN are a 400 here, never a
        # RecursionError (500) or a body a backend answers with a 500 its breaker would count.
        body = jsonbody.load_object(request.body)
        model = body.get("model")
    elif spec.body is Body.MULTIPART:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise BadRequest("This operation takes a multipart/form-data body.", code="invalid_content_type")
        parts = read_form(request.body, content_type)
        if not any(part.name in spec.file_parts for part in parts):
            raise BadRequest(f"'{spec.file_parts[0]}' is required: a file part.", param=spec.file_parts[0])
        model = form_field(request.body, content_type, "model")
    deployment = route.deployment
    needs_model = spec.deployment_scoped or spec.operation is Operation.RESPONSES_CREATE
    if needs_model and deployment is None:
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required: the name of a deployment.", param="model")
        deployment = model
    api_version = request.query.get("api-version") or DEFAULT_API_VERSION
    if not _API_VERSION.match(api_version):
        raise BadRequest("Invalid api-version.", param="api-version")
    _check(spec.operation, body)
    return ApiCall(spec.operation, deployment or "", body, api_version)


def _check(operation: Operation, body: dict[str, Any]) -> None:
    """The few fields the gateway itself reads, checked for their type (the backend validates the rest)."""
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be true or false.", param="stream")
    for name in ("max_tokens", "max_output_tokens", "n"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BadRequest(f"'{name}' must be a positive integer.", param=name)
    if operation is Operation.RESPONSES_CREATE:
        if "input" not in body and "previous_response_id" not in body:
            raise BadRequest("'input' is required.", param="input")
        previous = body.get("previous_response_id")
        if previous is not None and (not isinstance(previous, str) or not previous):
            raise BadRequest("'previous_response_id' must be a string.", param="previous_response_id")
    if operation is Operation.BATCHES_CREATE:
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise BadRequest("'input_file_id' is required.", param="input_file_id")


def with_model(body: bytes, deployment: str) -> bytes:
    """A JSON body naming the backend's own deployment in `model` (the URL of account operations names none)."""
    parsed = json.loads(body)
    parsed["model"] = deployment
    return json.dumps(parsed, separators=(",", ":")).encode()
