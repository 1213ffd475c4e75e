"""Batches: run a JSONL file of chat completion requests on a short, fixed schedule, with output and error files.

    POST /openai/batches?api-version=...   /openai/v1/batches     {"input_file_id", "endpoint", "completion_window"}
    GET  .../batches                        ?limit=N&after=ID
    GET  .../batches/{batch_id}
    POST .../batches/{batch_id}/cancel

A batch moves validating -> in_progress -> finalizing -> completed, one
`batch_step_seconds` each on the injected clock; reading it after that
finds `output_file_id` (one line per request that succeeded, each with the
chat completion body and its `usage`) and, if any failed, `error_file_id`.
An input line that is not JSON fails the whole batch in validation, as
Azure's does. The batch object follows Azure's `Batch` definition
(2024-10-01-preview), which has no `usage` field: token use is in each
output line's body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from simulator import chat, errors
from simulator.request import Call, Endpoint, encode
from simulator.schema import InvalidRequest, parse_chat
from simulator.store import Store, new_id

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from simulator.app import Simulator
    from simulator.files import FilesApi

CREATE = Endpoint("Batches_Create", deployment="none")
LIST = Endpoint("Batches_List", deployment="none", body="none")
READ = Endpoint("Batches_Get", deployment="none", body="none")
CANCEL = Endpoint("Batches_Cancel", deployment="none", body="none")

ENDPOINTS = frozenset({"/chat/completions", "/v1/chat/completions"})
_TIMESTAMPS = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "cancelling_at", "cancelled_at")
_STEPS = ("validating", "in_progress", "finalizing", "completed")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str]


def parse_create(body: object) -> BatchRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest("'input_file_id' is required.", "input_file_id")
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or endpoint not in ENDPOINTS:
        raise InvalidRequest(f"'endpoint' must be one of {', '.join(sorted(ENDPOINTS))}.", "endpoint")
    window = body.get("completion_window")
    if window != "24h":
        raise InvalidRequest("'completion_window' must be '24h'.", "completion_window")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidRequest("'metadata' must map strings to strings.", "metadata")
    return BatchRequest(file_id, str(endpoint), window, metadata)


class Batch:
    """One batch: its results are worked out when it is created and shown once the schedule says it is done."""

    __slots__ = ("body", "cancelled_at", "created_at", "errors", "failed_lines", "files_written", "lines", "step")

    def __init__(self, body: dict[str, object], created_at: float, step: float) -> None:
        self.body = body
        self.created_at = created_at
        self.step = step
        self.lines: list[dict[str, object]] = []
        self.failed_lines: list[dict[str, object]] = []
        self.errors: list[dict[str, object]] = []
        self.cancelled_at: float | None = None
        self.files_written = False

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled" if now >= self.cancelled_at + self.step else "cancelling"
        index = min(int((now - self.created_at) / self.step) if self.step else len(_STEPS), len(_STEPS) - 1)
        if self.errors and index >= 1:
            return "failed"
        return _STEPS[max(index, 0)]

    def to_json(self, now: float) -> dict[str, object]:
        status = self.status(now)
        at = int(self.created_at)
        step = self.step
        times: dict[str, float | None] = dict.fromkeys(_TIMESTAMPS)
        if status == "failed":
            times["failed_at"] = self.created_at + step
        elif self.cancelled_at is not None:
            times["cancelling_at"] = self.cancelled_at
            if status == "cancelled":
                times["cancelled_at"] = self.cancelled_at + step
        else:
            for name, reached in (("in_progress_at", 1), ("finalizing_at", 2), ("completed_at", 3)):
                if now >= self.created_at + reached * step:
                    times[name] = self.created_at + reached * step
        done = status == "completed"
        total = len(self.lines) + len(self.failed_lines)
        body = {
            **self.body,
            "status": status,
            "created_at": at,
            "expires_at": at + 24 * 3600,
            "request_counts": {
                "total": total,
                "completed": len(self.lines) if done else 0,
                "failed": len(self.failed_lines) if done else 0,
            },
        }
        # Azure's Batch definition has no nullable fields: a time not reached yet is left out, not null.
        body.update({name: int(value) for name, value in times.items() if value is not None})
        if self.errors:
            body["errors"] = {"object": "list", "data": self.errors}
        return body


class BatchesApi:
    __slots__ = ("_files", "_sim", "_store")

    def __init__(self, sim: Simulator, files: FilesApi) -> None:
        self._sim = sim
        self._files = files
        self._store: Store[Batch] = Store(sim.config.store_size)

    def clear(self) -> None:
        self._store.clear()

    def routes(self, prefix: str, v1: bool) -> list[tuple[str, str, Handler]]:
        def ep(endpoint: Endpoint) -> Endpoint:
            return endpoint.with_v1() if v1 else endpoint

        sim, one = self._sim, f"{prefix}/batches/{{batch_id}}"
        return [
            ("POST", f"{prefix}/batches", sim.handler(ep(CREATE), parse_create, self._create)),
            ("GET", f"{prefix}/batches", sim.handler(ep(LIST), _nothing, self._list)),
            ("GET", one, sim.handler(ep(READ), _nothing, self._retrieve)),
            ("POST", f"{one}/cancel", sim.handler(ep(CANCEL), _nothing, self._cancel)),
        ]

    async def _create(self, call: Call, request: BatchRequest, drop_after: int | None) -> web.StreamResponse:
        source = self._files.get(request.input_file_id)
        if source is None:
            return errors.not_found(f"File with id '{request.input_file_id}' not found.", param="input_file_id")
        if source.purpose != "batch":
            return errors.bad_request("The input file must be uploaded with purpose 'batch'.", "input_file_id")
        now = self._sim.clock.now()
        batch_id = new_id("batch_")
        body: dict[str, object] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": request.endpoint,
            "input_file_id": request.input_file_id,
            "completion_window": request.completion_window,
            "metadata": request.metadata,
        }
        batch = self._store.put(batch_id, Batch(body, now, self._sim.config.batch_step_seconds))
        self._run(batch, source.data, int(now))
        return await self._sim.respond(call, encode(self._refresh(batch, now)), None, drop_after)

    def _run(self, batch: Batch, data: bytes, created: int) -> None:
        """Answer every line now (the answers are deterministic); they are revealed when the batch completes."""
        deployments = set(self._sim.config.deployments)
        for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                batch.errors.append({"code": "invalid_json_line", "message": "This line is not JSON.", "line": number})
                continue
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            request_body = line.get("body") if isinstance(line, dict) else None
            if not isinstance(custom_id, str) or not isinstance(request_body, dict):
                batch.errors.append(
                    {"code": "invalid_request", "message": "Each line needs custom_id and body.", "line": number}
                )
                continue
            request_id = new_id("", 32)
            model = request_body.get("model")
            if not isinstance(model, str) or model not in deployments:
                batch.failed_lines.append(
                    _line(custom_id, request_id, 404, _error("DeploymentNotFound", f"Deployment {model} not found."))
                )
                continue
            try:
                parsed = parse_chat(request_body)
            except InvalidRequest as exc:
                batch.failed_lines.append(_line(custom_id, request_id, 400, _error("BadRequest", exc.message)))
                continue
            completion_id = "chatcmpl-" + request_id
            made = chat.answers(parsed, request_key=completion_id, default_tokens=self._sim.config.default_max_tokens)
            answer = chat.completion_body(
                completion_id=completion_id,
                created=created,
                model=str(model),
                made=made,
                usage=chat.usage(parsed, made),
            )
            batch.lines.append(_line(custom_id, request_id, 200, answer))

    def _refresh(self, batch: Batch, now: float) -> dict[str, object]:
        """The batch as of now; on first sight of completion its output and error files are written."""
        if batch.status(now) == "completed" and not batch.files_written:
            batch_id = str(batch.body["id"])
            if batch.lines:
                output = self._files.add(f"{batch_id}_output.jsonl", "batch_output", _jsonl(batch.lines))
                batch.body["output_file_id"] = output.id
            if batch.failed_lines:
                failed = self._files.add(f"{batch_id}_error.jsonl", "batch_output", _jsonl(batch.failed_lines))
                batch.body["error_file_id"] = failed.id
            batch.files_written = True
        return batch.to_json(now)

    def _find(self, call: Call) -> Batch | web.Response:
        batch_id = call.request.match_info["batch_id"]
        batch = self._store.get(batch_id)
        if batch is None:
            return errors.not_found(f"Batch with id '{batch_id}' not found.", param="batch_id")
        return batch

    async def _retrieve(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        batch = self._find(call)
        if isinstance(batch, web.Response):
            return batch
        return await self._sim.respond(call, encode(self._refresh(batch, self._sim.clock.now())), None, drop_after)

    async def _list(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        now = self._sim.clock.now()
        batches = [self._refresh(b, now) for b in reversed(self._store.values())]
        after = call.request.query.get("after")
        if after is not None:
            ids = [b["id"] for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        limit = call.request.query.get("limit", "")
        page = batches[: max(1, min(int(limit), 100))] if limit.isdigit() else batches[:20]
        body = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(batches) > len(page),
        }
        return await self._sim.respond(call, encode(body), None, drop_after)

    async def _cancel(self, call: Call, _: None, drop_after: int | None) -> web.StreamResponse:
        batch = self._find(call)
        if isinstance(batch, web.Response):
            return batch
        now = self._sim.clock.now()
        status = batch.status(now)
        if status in ("completed", "failed", "expired"):
            return errors.bad_request(f"Cannot cancel a batch with status '{status}'.")
        if batch.cancelled_at is None:
            batch.cancelled_at = now
        return await self._sim.respond(call, encode(self._refresh(batch, now)), None, drop_after)


def _line(custom_id: str, request_id: str, status: int, body: object) -> dict[str, object]:
    return {
        "id": "batch_req_" + request_id,
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }


def _error(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "type": "invalid_request_error", "param": None}}


def _jsonl(lines: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)


def _nothing(_: object) -> None:
    return None
