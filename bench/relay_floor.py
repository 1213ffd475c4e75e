"""The floor under the gateway's relay: the same bytes through the same host stack, with nothing of the gateway.

A trivial ASGI app served exactly as `local.host` serves the gateway (uvicorn,
uvloop, httptools, access log off) that forwards each POST to one backend with
one shared aiohttp session and relays the answer's chunks as they come: no
auth, no limits, no routing, no parsing, no metering. `bench.streams_bench
--floor` runs its bursts through it too, so the gateway's CPU per event can be
read against what the host, the event loop and the two sockets cost alone.

Two modes: `asgi` writes each chunk with the raw ASGI `send`; `starlette`
returns Starlette's `StreamingResponse`, as the gateway's handlers do.

Run: `python -m bench.relay_floor --port 7072 --backend http://127.0.0.1:8000 [--mode starlette]`
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class FloorRelay:
    """POST <path> -> the backend's <path>, headers passed on, the body streamed back chunk by chunk."""

    def __init__(self, backend: str, mode: str, backend_key: str) -> None:
        self._backend = backend.rstrip("/")
        self._mode = mode
        self._key = backend_key
        self._session: aiohttp.ClientSession | None = None

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            if self._session is not None:
                await self._session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        url = self._backend + scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        headers = {"api-key": self._key, "content-type": "application/json"}
        response = await self._session.post(url, data=body, headers=headers)
        try:
            if self._mode == "starlette":
                from starlette.responses import StreamingResponse  # noqa: PLC0415

                async def chunks() -> AsyncIterator[bytes]:
                    async for chunk in response.content.iter_any():
                        yield chunk

                await StreamingResponse(chunks(), response.status, media_type="text/event-stream")(scope, receive, send)
                return
            await send(
                {"type": "http.response.start", "status": response.status,
                 "headers": [(b"content-type", b"text/event-stream")]}
            )  # fmt: skip
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            response.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--backend-key", default="bench-key")
    parser.add_argument("--mode", choices=("asgi", "starlette"), default="asgi")
    args = parser.parse_args()
    import uvicorn  # noqa: PLC0415

    config = uvicorn.Config(
        FloorRelay(args.backend, args.mode, args.backend_key),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
