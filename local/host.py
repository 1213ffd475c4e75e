"""A small stand-in for the Azure Functions host: serves exactly the functions `function_app.py` registers.

It reads the registrations the way the real host indexes them
(`app.get_functions()`): HTTP routes (with `host.json`'s routePrefix and
route templates such as `{*path}`), methods, and timer triggers with their
NCRONTAB schedule (`%SETTING%` resolved from app settings). HTTP handlers get
the same Starlette request the FastAPI extension hands them in Azure, and
their responses stream the same way. Like `func start`, it loads `Values`
from `local.settings.json` into the environment first.

Run: `python -m local.host [--port 7071]` (`make run` does this for you).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.ncrontab import Schedule

log = logging.getLogger("local.host")
ROOT = Path(__file__).resolve().parent.parent

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def envelope(message: str, code: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}}).encode()


def _clip(value: str, limit: int = 200) -> str:
    from shared.logs import clip  # noqa: PLC0415 - the host loads the gateway's modules lazily

    return clip(value, limit)


def _envelope_400(self: Any, msg: str) -> None:
    """uvicorn's answer to a request it cannot parse, in the envelope rather than plain text.

    The server answers these itself, before the app is called (the request line or headers do not parse,
    so there is no request to hand over); what it can still do is say so in the envelope. Written to the
    transport directly, as uvicorn's own `send_400_response` does, and the connection closed.
    """
    body = envelope(f"Malformed HTTP request: {msg}", "malformed_request", "invalid_request_error")
    head = (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
    )
    self.transport.write(head + body)
    self.transport.close()


def envelope_protocol(kind: str = "httptools") -> type[Any]:
    """uvicorn's HTTP protocol (`httptools` or `h11`) with its malformed-request answer in the envelope.

    Passed to `uvicorn.Config(http=...)`; uvicorn is imported here, not when the host module loads.
    """
    if kind == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: PLC0415

        return type("EnvelopeH11Protocol", (H11Protocol,), {"send_400_response": _envelope_400})
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

    return type("EnvelopeHttpToolsProtocol", (HttpToolsProtocol,), {"send_400_response": _envelope_400})


def load_local_settings(path: Path = ROOT / "local.settings.json") -> list[str]:
    """Put `Values` from local.settings.json into the environment (existing variables win), as `func start` does."""
    if not path.exists():
        return []
    values = json.loads(path.read_text()).get("Values", {})
    loaded = []
    for name, value in values.items():
        if name not in os.environ:
            os.environ[name] = str(value)
            loaded.append(name)
    return loaded


def resolve_setting(expression: str) -> str:
    """Resolve a binding expression like `%GATEWAY_PROBE_SCHEDULE%` from app settings (catalog default if unset)."""
    match = re.fullmatch(r"%([^%]+)%", expression)
    if not match:
        return expression
    from shared.catalog import BY_NAME  # noqa: PLC0415 - the host knows the gateway's defaults

    name = match.group(1)
    value = os.environ.get(name) or (BY_NAME[name].default if name in BY_NAME else None)
    if not value:
        raise SystemExit(f"app setting {name} (used by a trigger binding) is not set")
    return value


def compile_route(template: str, prefix: str) -> re.Pattern[str]:
    """A Functions route template as a regex: `{name}`, `{name?}`, `{*rest}`, `{name:constraint}`."""
    parts = [p for p in f"{prefix}/{template}".split("/") if p]
    pattern = ""
    for part in parts:
        match = re.fullmatch(r"\{(\*)?([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]+)?(\?)?\}", part)
        if not match:
            pattern += "/" + re.escape(part)
        elif match.group(1):
            pattern += f"(?:/(?P<{match.group(2)}>.*))?"
        elif match.group(3):
            pattern += f"(?:/(?P<{match.group(2)}>[^/]+))?"
        else:
            pattern += f"/(?P<{match.group(2)}>[^/]+)"
    return re.compile(f"^{pattern or '/'}/?$")


def _specificity(template: str) -> tuple[int, int]:
    segments = [s for s in template.split("/") if s]
    literal = sum(1 for s in segments if not s.startswith("{"))
    catch_all = any(s.startswith("{*") for s in segments)
    return (-literal, int(catch_all))


@dataclass(frozen=True, slots=True)
class HttpFunction:
    name: str
    route: re.Pattern[str]
    template: str
    methods: frozenset[str]
    handler: Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class TimerFunction:
    name: str
    schedule: Schedule
    expression: str
    run_on_startup: bool
    handler: Callable[..., Awaitable[Any]]


_indexed: dict[int, list[Any]] = {}


def _functions(app: Any) -> list[Any]:
    # `get_functions()` may be called only once per app object; keep what it returned.
    if id(app) not in _indexed:
        _indexed[id(app)] = list(app.get_functions())
    return _indexed[id(app)]


def index(app: Any, route_prefix: str) -> tuple[list[HttpFunction], list[TimerFunction]]:
    """Read the app's registrations, as the Functions host does when it indexes a Python app."""
    http: list[HttpFunction] = []
    timers: list[TimerFunction] = []
    for function in _functions(app):
        trigger = function.get_trigger().get_dict_repr()
        handler = function.get_user_function()
        name = function.get_function_name()
        if trigger["type"] == "httpTrigger":
            template = trigger.get("route") or name
            methods = frozenset(str(getattr(m, "value", m)).upper() for m in trigger.get("methods") or [])
            http.append(HttpFunction(name, compile_route(template, route_prefix), template, methods, handler))
        elif trigger["type"] == "timerTrigger":
            expression = resolve_setting(trigger["schedule"])
            timers.append(
                TimerFunction(name, Schedule.parse(expression), expression, bool(trigger.get("runOnStartup")), handler)
            )
        else:
            log.warning("function %s has a %s trigger, which the local host does not run", name, trigger["type"])
    http.sort(key=lambda f: _specificity(f.template))
    return http, timers


class LocalHost:
    """An ASGI app serving the indexed HTTP functions, and the timer loops."""

    def __init__(self, app_module: str = "function_app", *, run_timers: bool = True) -> None:
        self._run_timers = run_timers
        host_json = json.loads((ROOT / "host.json").read_text())
        prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        module = importlib.import_module(app_module)
        self.http, self.timers = index(module.app, prefix)
        self._timer_tasks: list[asyncio.Task[None]] = []

    def describe(self) -> list[str]:
        lines = [f"  {f.name}: [{','.join(sorted(f.methods))}] /{f.template}" for f in self.http]
        lines += [f"  {t.name}: timer '{t.expression}'" for t in self.timers]
        return lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        from starlette.requests import Request  # noqa: PLC0415 - the extension's Request is Starlette's
        from starlette.responses import Response  # noqa: PLC0415

        path, method = scope["path"], scope["method"]
        allowed: set[str] = set()
        for function in self.http:
            match = function.route.match(path)
            if match and method in function.methods:
                scope["path_params"] = {k: v for k, v in match.groupdict().items() if v is not None}
                response = await function.handler(Request(scope, receive))
                await response(scope, receive, send)
                return
            if match:
                allowed |= function.methods
        # The Functions host answers these itself, with a bare 404, before any function runs: a method outside
        # the seven a function can register (TRACE, PROPFIND, ...) or one the route does not list. Here the
        # stand-in answers them in the envelope instead (405 when the path exists), so local callers and the
        # fuzz suite see one error shape; README "Local host" says what differs in Azure.
        status, code = (405, "method_not_allowed") if allowed else (404, "route_not_found")
        from shared.logs import request_id_from  # noqa: PLC0415

        request_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        headers = {"content-type": "application/json", "x-request-id": request_id_from(request_headers)}
        if allowed:
            headers["allow"] = ", ".join(sorted(allowed))
        message = f"{_clip(method, 20)} {_clip(path)} is not served here."
        body = envelope(message, code, "invalid_request_error")
        await Response(body, status_code=status, headers=headers)(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        from shared.gateway import get_gateway  # noqa: PLC0415

        await get_gateway()  # build now: a bad configuration is reported at start, not on first call
        for timer in self.timers if self._run_timers else []:
            self._timer_tasks.append(asyncio.get_running_loop().create_task(self._run_timer(timer)))

    async def shutdown(self) -> None:
        for task in self._timer_tasks:
            task.cancel()
        from shared.gateway import close_gateways  # noqa: PLC0415

        await close_gateways()

    async def _run_timer(self, timer: TimerFunction) -> None:
        from azure.functions.timer import TimerRequest  # noqa: PLC0415

        if not timer.run_on_startup:
            await self._sleep_until_due(timer)
        while True:
            try:
                await timer.handler(TimerRequest(past_due=False))
            except Exception:
                log.exception("timer function %s failed", timer.name)
            await self._sleep_until_due(timer)

    @staticmethod
    async def _sleep_until_due(timer: TimerFunction) -> None:
        wall = time.time()
        await asyncio.sleep(max(0.0, timer.schedule.next_after(wall) - wall))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--app", default="function_app", help="module that defines `app` (default function_app)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    # One BLAS thread for the cache's local embedder: the model's matrices are small, and OpenBLAS's own pool
    # fights the event loop for the cores (measured on 2 cores: first embeddings in a worker thread took 400 ms,
    # not 5 ms). OpenBLAS reads it once, when numpy loads, so the host sets it before anything imports numpy;
    # the gateway itself never writes the environment.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    load_local_settings()
    from shared import logs  # noqa: PLC0415
    from shared.config import get_settings  # noqa: PLC0415
    from shared.errors import ConfigError  # noqa: PLC0415

    try:
        settings = get_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(args.log_level, as_json=settings.log_json)
    port = args.port or int(os.environ.get("PORT") or 7071)
    host = LocalHost(args.app)
    print(f"local Functions host serving {args.app} on http://{args.host}:{port}", flush=True)
    print("\n".join(host.describe()), flush=True)

    import uvicorn  # noqa: PLC0415

    config = uvicorn.Config(
        host,
        host=args.host,
        port=port,
        loop="uvloop",
        http=envelope_protocol("httptools"),
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
