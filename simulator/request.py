"""One API request on its way through the simulator: which operation it is, where its deployment is named, its body.

Azure OpenAI names the deployment in three ways, and checks the api-version
in two:

    /openai/deployments/{d}/chat/completions?api-version=...   path, required
    /openai/responses?api-version=...   (files, batches too)     body "model" or none, required
    /openai/v1/responses                 (every v1 operation)    body "model" or none, optional

An `Endpoint` says which applies to a route; `read_body` turns a JSON or
multipart body into plain data (uploads as `Upload`), so every handler
parses the same way whatever the content type.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Literal

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

REQUEST_ID = web.RequestKey("simulator.request_id", str)
# The deployment a request named, wherever it named it (path or body), for the x-ms-deployment-name header.
DEPLOYMENT = web.RequestKey("simulator.deployment", str)

# What the v1 routes accept as api-version (none at all is the usual case).
V1_VERSIONS = frozenset({"v1", "preview", "latest"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How one operation is reached: its Azure operation name and where its deployment and api-version come from."""

    operation: str
    deployment: Literal["path", "body", "none"] = "path"
    v1: bool = False
    body: Literal["json", "multipart", "none"] = "json"

    def with_v1(self) -> Endpoint:
        """The same operation under /openai/v1: the deployment moves into the body as "model"."""
        deployment: Literal["path", "body", "none"] = "body" if self.deployment == "path" else self.deployment
        return Endpoint(self.operation, deployment, True, self.body)


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part of a multipart body."""

    filename: str
    content_type: str
    data: bytes

    def to_json(self) -> dict[str, object]:
        # The request log keeps the shape of an upload, not its bytes.
        return {"filename": self.filename, "content_type": self.content_type, "bytes": len(self.data)}


class Call:
    """One API request on its way through: what the log and the stats need to know about how it ended."""

    __slots__ = ("deployment", "endpoint", "operation", "outcome", "request", "request_id")

    def __init__(self, request: web.Request, endpoint: Endpoint, deployment: str | None = None) -> None:
        self.request = request
        self.endpoint = endpoint
        self.operation = endpoint.operation
        self.deployment = deployment
        # Also the response's apim-request-id / x-request-id (see `stamp` in create_app).
        self.request_id = request[REQUEST_ID] = str(uuid.uuid4())
        # Set when the answer is not an HTTP status (connection cut, client gone); else the status is used.
        self.outcome: str | None = None


class BodyError(ValueError):
    """A body that cannot be read as its content type says (or is larger than the simulator takes)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: web.Request, kind: str, max_bytes: int) -> object:
    """The body as JSON data; a multipart form becomes a dict of strings and `Upload`s (repeated names: lists)."""
    if kind == "none":
        return None
    if kind == "multipart":
        if not request.content_type.startswith("multipart/"):
            raise BodyError("This operation takes a multipart/form-data body.")
        try:
            return await _read_form(request, max_bytes)
        except BodyError:
            raise
        except (ValueError, HttpProcessingError) as exc:  # no boundary, a broken part header: the service says 400
            raise BodyError("We could not parse the multipart body of your request.") from exc
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BodyError("We could not parse the JSON body of your request.") from exc


async def _read_form(request: web.Request, max_bytes: int) -> dict[str, object]:
    form: dict[str, object] = {}
    reader = await request.multipart()
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        data = bytearray()
        # Read in chunks so an oversized upload is refused before it is all in memory.
        while chunk := await part.read_chunk():
            total += len(chunk)
            if total > max_bytes:
                raise BodyError(f"The request body is larger than {max_bytes} bytes.", 413)
            data.extend(chunk)
        value: object = (
            Upload(part.filename, part.headers.get("Content-Type", "application/octet-stream"), bytes(data))
            if part.filename is not None
            else bytes(data).decode("utf-8", "replace")
        )
        if part.name in form:
            previous = form[part.name]
            form[part.name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            form[part.name] = value
    return form


def encode(value: object) -> bytes:
    """Compact JSON, as the service sends it."""
    return json.dumps(value, separators=(",", ":")).encode()


def loggable(body: object) -> object:
    """A body as the request log shows it: uploads by name, type and size."""
    if isinstance(body, dict):
        return {k: loggable(v) for k, v in body.items()}
    if isinstance(body, list):
        return [loggable(v) for v in body]
    if isinstance(body, Upload):
        return body.to_json()
    return body
