"""What the simulator has received: the last N requests exactly as they arrived, and answer counts.

Tests read the log to prove what a gateway forwarded (and what it must never
forward, such as the caller's subscription key). Recording keeps references
only; headers and query are decoded when the log is read, off the hot path.
"""

from __future__ import annotations

from collections import Counter, deque
from urllib.parse import parse_qsl

from aiohttp import web


class Received:
    """One request: method, path, query, headers in arrival order and case, parsed JSON body, and its outcome."""

    __slots__ = ("body", "deployment", "id", "method", "path", "query_string", "raw_headers", "status", "timestamp")

    def __init__(self, request: web.BaseRequest, request_id: str, deployment: str | None, body: object, at: float):
        self.id = request_id
        self.timestamp = at
        self.method = request.method
        self.path = request.path
        self.query_string = request.query_string
        self.raw_headers = request.raw_headers
        self.deployment = deployment
        self.body = body
        # An HTTP status, or how the connection ended without one: down, hung, dropped, client_disconnected.
        self.status: str | None = None

    def to_json(self) -> dict[str, object]:
        headers: dict[str, str] = {}
        raw_headers: list[list[str]] = []
        for raw_name, raw_value in self.raw_headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("utf-8", "replace")
            raw_headers.append([name, value])
            key = name.lower()
            # Repeated headers join as HTTP allows, so none is hidden from a test.
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return {
            "id": self.id,
            "timestamp": self.timestamp,
            "method": self.method,
            "path": self.path,
            "query": dict(parse_qsl(self.query_string, keep_blank_values=True)),
            "headers": headers,
            "raw_headers": raw_headers,
            "deployment": self.deployment,
            "body": self.body,
            "status": self.status,
        }


class RequestLog:
    __slots__ = ("_entries",)

    def __init__(self, size: int) -> None:
        self._entries: deque[Received] = deque(maxlen=size)

    def add(self, received: Received) -> Received:
        self._entries.append(received)
        return received

    def entries(self, limit: int | None = None) -> list[dict[str, object]]:
        """Oldest first; the last `limit` only, if given."""
        chosen = list(self._entries)[-limit:] if limit else list(self._entries)
        return [r.to_json() for r in chosen]

    def clear(self) -> None:
        self._entries.clear()


class Stats:
    """Answers counted by status (or connection outcome), overall and per deployment."""

    __slots__ = ("_by_deployment", "_by_status")

    def __init__(self) -> None:
        self._by_status: Counter[str] = Counter()
        self._by_deployment: dict[str, Counter[str]] = {}

    def count(self, deployment: str | None, status: str) -> None:
        self._by_status[status] += 1
        if deployment is not None:
            self._by_deployment.setdefault(deployment, Counter())[status] += 1

    def to_json(self) -> dict[str, object]:
        return {
            "requests": sum(self._by_status.values()),
            "by_status": dict(self._by_status),
            "by_deployment": {
                name: {"requests": sum(counts.values()), "by_status": dict(counts)}
                for name, counts in self._by_deployment.items()
            },
        }

    def clear(self) -> None:
        self._by_status.clear()
        self._by_deployment.clear()
