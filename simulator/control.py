"""The `/_sim` routes: faults, latency, limits, the request log, stats and health, driven over HTTP.

GET    /_sim/health      200, or the connection closed while the server is `down`
GET    /_sim/faults      the current fault set and how many requests it has left
POST   /_sim/faults      change the given fields (?replace=true: replace the whole set)
PUT    /_sim/faults      replace the whole set
DELETE /_sim/faults      no faults
GET    /_sim/latency     {"ttft_ms", "tokens_per_second"}
POST   /_sim/latency     change either
GET    /_sim/requests    the remembered requests, oldest first (?limit=N: the last N)
DELETE /_sim/requests    forget them
GET    /_sim/stats       answers per deployment and per status
DELETE /_sim/stats       zero the counts
DELETE /_sim/limits      empty every deployment's token / request window
POST   /_sim/reset       all of the above back to the starting configuration (stored objects forgotten too)
GET    /_sim/blobs/{id}  an image answered as a `url` (routed in `simulator.media`)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from simulator import errors
from simulator.faults import FaultError, Faults

if TYPE_CHECKING:
    from simulator.app import Simulator


def add_control_routes(app: web.Application, sim: Simulator) -> None:
    control = _Control(sim)
    router = app.router
    router.add_get("/_sim/health", control.health)
    router.add_get("/_sim/faults", control.get_faults)
    router.add_post("/_sim/faults", control.change_faults)
    router.add_put("/_sim/faults", control.replace_faults)
    router.add_delete("/_sim/faults", control.clear_faults)
    router.add_get("/_sim/latency", control.get_latency)
    router.add_post("/_sim/latency", control.change_latency)
    router.add_get("/_sim/requests", control.get_requests)
    router.add_delete("/_sim/requests", control.clear_requests)
    router.add_get("/_sim/stats", control.get_stats)
    router.add_delete("/_sim/stats", control.clear_stats)
    router.add_delete("/_sim/limits", control.reset_limits)
    router.add_post("/_sim/reset", control.reset)


class _Control:
    __slots__ = ("_sim",)

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    async def health(self, request: web.Request) -> web.StreamResponse:
        if self._sim.faults.health_down() and request.transport is not None:
            request.transport.close()
        return web.json_response({"status": "ok", "name": self._sim.config.name})

    async def get_faults(self, _: web.Request) -> web.Response:
        return self._faults()

    async def change_faults(self, request: web.Request) -> web.Response:
        return await self._set_faults(request, merge=request.query.get("replace", "").lower() not in ("1", "true"))

    async def replace_faults(self, request: web.Request) -> web.Response:
        return await self._set_faults(request, merge=False)

    async def clear_faults(self, _: web.Request) -> web.Response:
        self._sim.clear_faults()
        return self._faults()

    async def _set_faults(self, request: web.Request, *, merge: bool) -> web.Response:
        try:
            data = await request.json()
            base = self._sim.faults.current if merge else Faults()
            self._sim.set_faults(Faults.from_json(data, base))
        except (ValueError, FaultError) as exc:
            return errors.bad_request(str(exc))
        return self._faults()

    def _faults(self) -> web.Response:
        injector = self._sim.faults
        return web.json_response({"faults": injector.current.to_json(), "remaining": injector.remaining})

    async def get_latency(self, _: web.Request) -> web.Response:
        return self._latency()

    async def change_latency(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            if not isinstance(data, dict) or set(data) - {"ttft_ms", "tokens_per_second"}:
                raise ValueError("latency takes an object with 'ttft_ms' and/or 'tokens_per_second'")
            self._sim.set_latency(ttft_ms=data.get("ttft_ms"), tokens_per_second=data.get("tokens_per_second"))
        except (ValueError, TypeError) as exc:
            return errors.bad_request(str(exc))
        return self._latency()

    def _latency(self) -> web.Response:
        latency = self._sim.latency
        return web.json_response({"ttft_ms": latency.ttft_ms, "tokens_per_second": latency.tokens_per_second})

    async def get_requests(self, request: web.Request) -> web.Response:
        limit = request.query.get("limit", "")
        entries = self._sim.requests(int(limit) if limit.isdigit() else None)
        return web.json_response({"requests": entries})

    async def clear_requests(self, _: web.Request) -> web.Response:
        self._sim.clear_requests()
        return web.json_response({"requests": []})

    async def get_stats(self, _: web.Request) -> web.Response:
        return web.json_response(self._sim.stats())

    async def clear_stats(self, _: web.Request) -> web.Response:
        self._sim.clear_stats()
        return web.json_response(self._sim.stats())

    async def reset_limits(self, _: web.Request) -> web.Response:
        self._sim.reset_limits()
        return web.json_response({"limits": "reset"})

    async def reset(self, _: web.Request) -> web.Response:
        self._sim.reset()
        return web.json_response({"reset": True})
