"""Azure Functions entry point: adapts HTTP and timer triggers to the gateway, and nothing more.

Each HTTP function turns the Functions request (a Starlette request, through
the FastAPI extension that makes streaming possible) into a `GatewayRequest`,
calls one entry of `shared`, and renders the result. The local host
(`local/host.py`) serves exactly these functions.

The Functions host reserves routes that start with `admin` or `runtime`, so
the gateway's admin API lives under `/gateway/admin/`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from shared.errors import ConfigError, GatewayError, PayloadTooLarge, ServiceUnavailable, error_response
from shared.logs import install_filter, request_id_from, request_id_var
from shared.models import GatewayRequest, GatewayResponse

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
log = logging.getLogger("gateway.http")

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_MAX_BODY_CEILING = 64 * 1024 * 1024  # a JSON body is read no further than this, whatever the configured limit


async def _read_body(req: Request, limit: int) -> bytes:
    declared = req.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than the gateway's limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in req.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than the gateway's limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _render(result: GatewayResponse) -> Response:
    if result.stream is not None:
        return StreamingResponse(
            result.stream, status_code=result.status, headers=result.headers, media_type="text/event-stream"
        )
    return Response(result.body, status_code=result.status, headers=result.headers)


def _error(exc: GatewayError, request_id: str) -> Response:
    return _render(error_response(exc, request_id))


async def _serve(req: Request, entry_name: str) -> Response:
    """Build the gateway request, call the named entry, render; nothing escapes as a bare 500."""
    # Read once into a plain dict: each lookup on Starlette's headers scans them all (measured: 4% of
    # the gateway's CPU in a burst of streams, for the request id's two lookups alone).
    headers = {k.lower(): v for k, v in req.headers.items()}
    request_id = request_id_from(headers)
    request_id_var.set(request_id)
    try:
        from shared.gateway import get_gateway  # noqa: PLC0415 - lazy: cold start stays cheap
        from shared.http import serve  # noqa: PLC0415

        gateway = await get_gateway()
        if gateway.settings.running_in_azure and not _exit_flush_installed:
            _install_exit_flush()
            install_filter(as_json=gateway.settings.log_json)  # the worker's handlers: one safe line per record
        from shared.surface import limit_for  # noqa: PLC0415

        # Uploads (audio, image edits, files) have limits of their own, above GATEWAY_MAX_BODY_BYTES.
        limit = limit_for(req.method, req.url.path, gateway.settings, ceiling=_MAX_BODY_CEILING)
        body = await _read_body(req, limit) if req.method not in ("GET", "HEAD") else b""
        request = GatewayRequest(
            method=req.method,
            path=req.url.path,
            headers=headers,
            query=dict(req.query_params),
            body=body,
            request_id=request_id,
            client_ip=req.client.host if req.client else None,
        )
        return _render(await serve(entry_name, gateway, request))
    except GatewayError as exc:
        return _error(exc, request_id)
    except ConfigError as exc:
        log.error("%s", exc)
        return _error(
            ServiceUnavailable(
                "The gateway is misconfigured; see its logs.",
                code="config_error",
                headers={"x-should-retry": "false"},  # retrying cannot fix the configuration
            ),
            request_id,
        )
    except Exception:  # the last line of defence: log it, answer in the envelope
        log.exception("unhandled error")
        return _error(GatewayError("The gateway failed to handle this request."), request_id)


_exit_flush_installed = False
_exit_tasks: set[asyncio.Task[None]] = set()
_EXIT_FLUSH_SECONDS = 8.0


def _install_exit_flush() -> None:
    """Write the usage ledger and the last metrics before the worker ends.

    The Functions host ends the Python worker with SIGTERM and the worker offers
    no shutdown hook (azure-functions-python-worker#1521), so the gateway
    closes itself on that signal, then ends the way SIGTERM would have.
    """
    global _exit_flush_installed  # noqa: PLW0603 - once per worker
    _exit_flush_installed = True
    loop = asyncio.get_running_loop()

    async def close_then_exit() -> None:
        from shared.gateway import close_gateways  # noqa: PLC0415

        try:
            async with asyncio.timeout(_EXIT_FLUSH_SECONDS):
                await close_gateways()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def on_sigterm() -> None:
        _exit_tasks.add(loop.create_task(close_then_exit()))  # held: the loop keeps only weak references

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError, ValueError) as exc:  # not the main thread, or not a Unix loop
        log.warning("usage ledger will not be flushed at exit: %s", exc)


@app.route(route="openai/{*path}", methods=ALL_METHODS)
async def openai_azure_shape(req: Request) -> Response:
    return await _serve(req, "proxy")


@app.route(route="v1/{*path}", methods=ALL_METHODS)
async def openai_v1_shape(req: Request) -> Response:
    return await _serve(req, "proxy")


@app.route(route="health", methods=["GET", "HEAD"])  # HEAD: uptime checks
async def health(req: Request) -> Response:
    return await _serve(req, "health")


@app.route(route="usage", methods=["GET"])
async def usage(req: Request) -> Response:
    return await _serve(req, "usage")


@app.route(route="openapi.json", methods=["GET"])
async def openapi(req: Request) -> Response:
    return await _serve(req, "openapi")


@app.route(route="metrics", methods=["GET"])
async def metrics(req: Request) -> Response:
    return await _serve(req, "metrics")


# More specific than the admin API's catch-all, so the host routes it here.
@app.route(route="gateway/admin/usage", methods=["GET"])
async def admin_usage(req: Request) -> Response:
    return await _serve(req, "admin_usage")


@app.route(route="gateway/admin/{*path}", methods=ALL_METHODS)
async def admin(req: Request) -> Response:
    return await _serve(req, "admin")


@app.timer_trigger(schedule="%GATEWAY_PROBE_SCHEDULE%", arg_name="timer", run_on_startup=False)
async def probe_backends(timer: func.TimerRequest) -> None:
    from shared.gateway import get_gateway  # noqa: PLC0415 - lazy: cold start
    from shared.probe import probe_all  # noqa: PLC0415

    gateway = await get_gateway()
    if gateway.settings.running_in_azure:
        install_filter(as_json=gateway.settings.log_json)
    gateway.telemetry.record_probes(await probe_all(gateway))


# The browser pages (shared/pages.py): static files from a fixed manifest, the keys stay with the caller.
# Every method, so that a POST gets the pages' own 405 with Allow, not the fallback's 404.
@app.route(route="chat/{*path}", methods=ALL_METHODS)
async def chat_page(req: Request) -> Response:
    return await _serve(req, "pages")


@app.route(route="dashboard/{*path}", methods=ALL_METHODS)
async def dashboard_page(req: Request) -> Response:
    return await _serve(req, "pages")


# Registered last and least specific: `/` redirects to the chat page (a route cannot be empty), any other
# path gets a 404 in the OpenAI envelope, not the host's bare one.
@app.route(route="{*path}", methods=ALL_METHODS)
async def not_found(req: Request) -> Response:
    return await _serve(req, "fallback")
