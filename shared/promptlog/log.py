"""`PromptLog`: finished requests' records queued in memory, written in batches to one append blob per hour and
instance, and found again by request id.

A request never waits for the log and never fails because of it: `add` turns
the record into a small tuple and appends it to a bounded queue, or counts it
as dropped when the queue is full. One writer task per worker drains the
queue: it masks, caps and serialises the records off the request's path and
appends each batch with one storage transaction (`shared.stores.blobs`).

Blob names are `YYYY/MM/DD/HH/<instance>.jsonl` (UTC hour of the request's
end). Request ids are the caller's `x-request-id` when it sent a sane one, so
they cannot carry the time; rather than write an index (a second transaction
per request, for a look-up that support makes a few times a day), a look-up
scans the hour files around a given time (`at`, default now) back
`lookup_hours` hours, newest first, and stops at the first match.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.clock import Clock
from shared.errors import StoreUnavailable
from shared.outcomes import RequestRecord
from shared.promptlog.config import PromptLogConfig
from shared.promptlog.redact import Redactor
from shared.stores.blobs import MAX_APPEND_BYTES, AppendLog

log = logging.getLogger("gateway.promptlog")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_WARN_EVERY_SECONDS = 60.0
texts_of = ("request", "response")
_CLOSE_SECONDS = 10.0

# (time, request id, fields known when the request ended); the heavy work is the writer's.
Pending = tuple[float, str, dict[str, Any]]


def hour_prefix(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y/%m/%d/%H/")


class PromptLog:
    def __init__(
        self,
        config: PromptLogConfig,
        store: AppendLog,
        clock: Clock,
        *,
        instance_id: str,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._clock = clock
        self._instance = _UNSAFE.sub("-", instance_id)[:120] or "instance"
        self._on_count = on_count
        self._redactor = Redactor(config.redact)
        self._queue: deque[Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._warned_at = -_WARN_EVERY_SECONDS
        self._unwarned = 0
        self.counts = {"queued": 0, "written": 0, "dropped": 0, "failed": 0, "truncated": 0, "batches": 0}

    # --- the request's side: never waits, never raises ---------------------------------------------

    def add(self, record: RequestRecord) -> None:
        """Queue a finished request's record if its subscription logs prompts (the pipeline set its body)."""
        if record.request_body is None or self._closing:
            return
        if len(self._queue) >= self.config.queue_size:
            self._count("dropped", 1)
            self._warn_dropped()
            return
        caller = record.caller
        fields: dict[str, Any] = {
            "subscription": caller.subscription_id if caller else None,
            "identity": {
                "subscription_id": caller.subscription_id,
                "subscription_name": caller.subscription_name,
                "auth_mode": caller.auth_mode.value,
                "principal": caller.principal,  # the Entra object id, for token callers
                "end_user": caller.end_user,
            }
            if caller
            else None,
            "deployment": record.deployment,
            "operation": record.operation,
            "backend": record.backend,
            "status": record.status,
            "outcome": record.outcome.value,
            "error": record.error,
            "cache": record.cache,
            "streamed": record.streamed,
            "usage": {
                "prompt_tokens": record.usage.prompt_tokens,
                "completion_tokens": record.usage.completion_tokens,
                "total_tokens": record.usage.total_tokens,
            }
            if record.usage
            else None,
            "seconds": round(record.seconds, 4),
            "request": record.request_body,
            "response": record.completion,
        }
        self._queue.append((self._clock.now(), record.request_id, fields))
        self.counts["queued"] += 1
        self._ensure_writer()
        if self._wake is not None:
            self._wake.set()
            if self._full is not None and len(self._queue) >= self.config.batch_records:
                self._full.set()

    def _count(self, result: str, n: int) -> None:
        self.counts[result] += n
        if self._on_count is not None:
            self._on_count(result, n)

    def _warn_dropped(self) -> None:
        self._unwarned += 1
        now = self._clock.now()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            log.warning(
                "audit log queue full (%d records): %d record(s) dropped since the last warning",
                self.config.queue_size,
                self._unwarned,
            )
            self._warned_at, self._unwarned = now, 0

    def _ensure_writer(self) -> None:
        if self._writer is not None and not self._writer.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # outside a loop (a test's record): written at close
        self._wake, self._full = asyncio.Event(), asyncio.Event()
        self._writer = loop.create_task(self._run(), name="promptlog-writer")

    # --- the writer -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None  # noqa: S101 - set with the task
        assert self._full is not None  # noqa: S101
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if len(self._queue) < self.config.batch_records and not self._closing:
                # Let the batch fill: one storage transaction per batch, not per request.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.config.flush_seconds)
                self._full.clear()
            batch = [self._queue.popleft() for _ in range(min(self.config.batch_records, len(self._queue)))]
            await self._write(batch)

    def serialise(self, pending: Pending) -> bytes:
        """One JSON line: masked, and cut to the size cap with the cut marked."""
        at, request_id, fields = pending
        fields = {**fields, "request": self._redactor.value(fields["request"])}
        fields["response"] = self._redactor.value(fields["response"])
        time = datetime.fromtimestamp(at, UTC).isoformat()
        head = {"request_id": request_id, "time": time, "instance": self._instance}
        line = json.dumps({**head, **fields}, ensure_ascii=False, separators=(",", ":"), default=str)
        if len(line.encode()) <= self.config.max_record_bytes:
            return line.encode() + b"\n"
        self.counts["truncated"] += 1
        rest = {**head, **fields, "request": None, "response": None, "truncated": True}
        budget = max(0, self.config.max_record_bytes - len(json.dumps(rest, default=str).encode()) - 200)
        texts = {n: json.dumps(fields[n], ensure_ascii=False, separators=(",", ":"), default=str) for n in texts_of}
        keep = budget // 2
        while True:
            for name, text in texts.items():
                rest[name] = (
                    fields[name]
                    if len(text.encode()) <= keep
                    else {"truncated": True, "original_chars": len(text), "text": text[:keep]}
                )
            out = json.dumps(rest, ensure_ascii=False, separators=(",", ":"), default=str).encode()
            if len(out) <= self.config.max_record_bytes or keep == 0:
                return out + b"\n"
            keep //= 2  # multi-byte characters and escaped quotes made the cut text longer than its share

    async def _write(self, batch: list[Pending]) -> None:
        by_blob: dict[str, list[bytes]] = {}
        for pending in batch:
            name = f"{hour_prefix(pending[0])}{self._instance}.jsonl"
            by_blob.setdefault(name, []).append(self.serialise(pending))
        for name, lines in by_blob.items():
            for chunk in _chunks(lines):
                try:
                    await self.store.append(name, b"".join(chunk))
                except StoreUnavailable as exc:
                    self._count("failed", len(chunk))
                    log.warning("audit log: %d record(s) not written: %s", len(chunk), exc)
                    continue
                self._count("written", len(chunk))
                self.counts["batches"] += 1

    async def flush(self) -> None:
        """Write everything queued now (tests, and close)."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.config.batch_records, len(self._queue)))]
            await self._write(batch)

    async def close(self) -> None:
        self._closing = True
        writer = self._writer
        if writer is not None and not writer.done():
            assert self._wake is not None  # noqa: S101 - set with the task
            assert self._full is not None  # noqa: S101
            self._wake.set()
            self._full.set()
            try:
                await asyncio.wait_for(writer, _CLOSE_SECONDS)
            except TimeoutError:
                log.warning("audit log: %d record(s) not written at shutdown", len(self._queue))
        await self.flush()
        await self.store.close()

    def stats(self) -> dict[str, object]:
        queue = {"queue": len(self._queue), "queue_size": self.config.queue_size}
        return {"store": self.store.kind, **queue, **self.counts}

    # --- support look-ups -----------------------------------------------------------------------------

    async def find(
        self, request_id: str, *, at: float | None = None, hours: int | None = None
    ) -> dict[str, Any] | None:
        """The record of one request: the hour files from `at` (default now) back `hours`, and the hour after."""
        start = self._clock.now() if at is None else at
        span = self.config.lookup_hours if hours is None else hours
        needle = json.dumps(request_id).encode()
        for step in range(-1, span + 1):  # the hour after first: a request that ended just past `at`
            prefix = hour_prefix(start - step * 3600)
            for name in reversed(await self.store.names(prefix)):
                data = await self.store.read(name)
                if needle not in data:
                    continue
                for line in data.splitlines():
                    if needle in line:
                        record = json.loads(line)
                        if record.get("request_id") == request_id:
                            return dict(record)
        return None


def _chunks(lines: list[bytes]) -> list[list[bytes]]:
    """Lines grouped into appends of at most one block each."""
    chunks: list[list[bytes]] = [[]]
    size = 0
    for line in lines:
        if size + len(line) > MAX_APPEND_BYTES and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line)
    return chunks
