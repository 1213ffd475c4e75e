"""Files: upload (multipart), list, retrieve, delete and download, held by this simulator instance only.

    POST   /openai/files?api-version=...        /openai/v1/files        multipart: purpose, file
    GET    .../files                            ?purpose=batch
    GET    .../files/{file_id}
    DELETE .../files/{file_id}
    GET    .../files/{file_id}/content

The file object is Azure's (`AzureOpenAIFile` in the v1 specification):
`status` is "processed" at once, since the simulator has nothing to scan.
Batches write their output here too (purpose "batch_output").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from simulator import errors
from simulator.request import Call, Endpoint, Upload, encode
from simulator.schema import InvalidRequest
from simulator.store import Store, new_id

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from simulator.app import Simulator

UPLOAD = Endpoint("Files_Upload", deployment="none", body="multipart")
LIST = Endpoint("Files_List", deployment="none", body="none")
READ = Endpoint("Files_Get", deployment="none", body="none")
DELETE = Endpoint("Files_Delete", deployment="none", body="none")
CONTENT = Endpoint("Files_GetContent", deployment="none", body="none")

UPLOAD_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "evals", "user_data", "vision"})


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    data: bytes

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass(frozen=True, slots=True)
class FileUpload:
    purpose: str
    upload: Upload


def parse_upload(body: object) -> FileUpload:
    form = body if isinstance(body, dict) else {}
    purpose = form.get("purpose")
    if not isinstance(purpose, str) or purpose not in UPLOAD_PURPOSES:
        allowed = ", ".join(sorted(UPLOAD_PURPOSES))
        raise InvalidRequest(f"'purpose' must be one of {allowed}.", "purpose")
    upload = form.get("file")
    if not isinstance(upload, Upload) or not upload.data:
        raise InvalidRequest("'file' must be a non-empty file part.", "file")
    return FileUpload(str(purpose), upload)


class FilesApi:
    __slots__ = ("_sim", "_store")

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._store: Store[StoredFile] = Store(sim.config.store_size)

    def add(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(new_id("file-"), filename, purpose, int(self._sim.clock.now()), data)
        return self._store.put(stored.id, stored)

    def get(self, file_id: str) -> StoredFile | None:
        return self._store.get(file_id)

    def clear(self) -> None:
        self._store.clear()

    def routes(self, prefix: str, v1: bool) -> list[tuple[str, str, Handler]]:
        def ep(endpoint: Endpoint) -> Endpoint:
            return endpoint.with_v1() if v1 else endpoint

        sim, one = self._sim, f"{prefix}/files/{{file_id}}"
        return [
            ("POST", f"{prefix}/files", sim.handler(ep(UPLOAD), parse_upload, self._upload)),
            ("GET", f"{prefix}/files", sim.handler(ep(LIST), _nothing, self._list)),
            ("GET", one, sim.handler(ep(READ), _nothing, self._retrieve)),
            ("DELETE", one, sim.handler(ep(DELETE), _nothing, self._delete)),
            ("GET", f"{one}/content", sim.handler(ep(CONTENT), _nothing, self._content)),
        ]

    async def _upload(self, call: Call, upload: FileUpload, drop_after: int | None) -> web.StreamResponse:
        stored = self.add(upload.upload.filename, upload.purpose, upload.upload.data)
        return await self._sim.respond(call, encode(stored.to_json()), None, drop_after)

    async def _list(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        purpose = call.request.query.get("purpose")
        files = [f.to_json() for f in reversed(self._store.values()) if purpose is None or f.purpose == purpose]
        body = {
            "object": "list",
            "data": files,
            "first_id": files[0]["id"] if files else None,
            "last_id": files[-1]["id"] if files else None,
            "has_more": False,
        }
        return await self._sim.respond(call, encode(body), None, drop_after)

    def _find(self, call: Call) -> StoredFile | web.Response:
        file_id = call.request.match_info["file_id"]
        stored = self._store.get(file_id)
        if stored is None:
            return errors.not_found(f"File with id '{file_id}' not found.", param="file_id")
        return stored

    async def _retrieve(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        found = self._find(call)
        if isinstance(found, web.Response):
            return found
        return await self._sim.respond(call, encode(found.to_json()), None, drop_after)

    async def _delete(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        found = self._find(call)
        if isinstance(found, web.Response):
            return found
        self._store.pop(found.id)
        body = {"id": found.id, "object": "file", "deleted": True}
        return await self._sim.respond(call, encode(body), None, drop_after)

    async def _content(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        found = self._find(call)
        if isinstance(found, web.Response):
            return found
        return await self._sim.respond(call, found.data, None, drop_after, content_type="application/octet-stream")


def _nothing(_: object) -> None:
    return None
