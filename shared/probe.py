"""The health probe the timer trigger runs, and the operator's view of every backend.

Each backend deployment gets the cheapest real call there is (a one-token
completion, or a one-word embedding). A backend that does not answer, or
answers 5xx, has its breaker opened at once; one that answers again has its
breaker closed once its trip time is over. 4xx and 429 prove it is alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from shared.breaker import BreakerBoard, Status
from shared.errors import StoreUnavailable
from shared.models import DEFAULT_API_VERSION

if TYPE_CHECKING:
    from shared.config import BackendConfig
    from shared.gateway import Gateway

log = logging.getLogger("gateway.probe")

PROBE_TIMEOUT = 10.0


def _probe_request(gateway_deployment: str) -> tuple[str, bytes]:
    if "embed" in gateway_deployment.lower():
        return "embeddings", b'{"input":"ping"}'
    return "chat/completions", json.dumps({"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}).encode()


async def probe_one(gateway: Gateway, backend: BackendConfig, deployment: str) -> dict[str, object]:
    operation, body = _probe_request(deployment)
    url = f"{backend.endpoint}/openai/deployments/{backend.deployments[deployment]}/{operation}"
    headers = {"content-type": "application/json", "x-ms-client-request-id": f"probe-{int(time.time())}"}
    started = time.perf_counter()
    outcome: dict[str, object] = {"at": gateway.clock.now()}
    try:
        headers.update(await gateway.credentials[backend.name].headers())
        session = await gateway.session()
        async with (
            asyncio.timeout(PROBE_TIMEOUT),
            session.post(url, params={"api-version": DEFAULT_API_VERSION}, data=body, headers=headers) as resp,
        ):
            await resp.read()
            outcome.update(status=resp.status, ok=resp.status < 500, error="")
    except TimeoutError:
        outcome.update(status=0, ok=False, error="timeout")
    except aiohttp.ClientError as exc:
        outcome.update(status=0, ok=False, error=type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a probe must report, never raise into the timer
        outcome.update(status=0, ok=False, error=f"{type(exc).__name__}: {exc}")
    outcome["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return outcome


async def probe_all(gateway: Gateway) -> dict[str, dict[str, object]]:
    """Probe every (backend, deployment), record the results, and open or close breakers."""
    pairs = [(b, d) for b in gateway.settings.backends for d in b.deployments]
    results = await asyncio.gather(*(probe_one(gateway, b, d) for b, d in pairs))
    report: dict[str, dict[str, object]] = {}
    for (backend, deployment), outcome in zip(pairs, results, strict=True):
        key = BreakerBoard.key(backend.name, deployment)
        report[key] = outcome
        try:
            await gateway.stores.backends.save_probe(key, outcome)
        except StoreUnavailable as exc:
            log.warning("could not record probe of %s: %s", key, exc)
        if outcome["ok"]:
            await gateway.breakers.close(key)
        else:
            reason = f"probe: {outcome['error'] or outcome['status']}"
            log.warning("probe of %s failed (%s, %s ms)", key, reason, outcome["latency_ms"])
            await gateway.breakers.open(key, reason)
    return report


def _iso(epoch: float) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch else None


async def backends_report(gateway: Gateway) -> dict[str, Any]:
    await gateway.breakers.sync()
    try:
        probes = await gateway.stores.backends.load_probes()
    except StoreUnavailable:
        probes = {}
    now = gateway.clock.now()
    rows = []
    for backend in gateway.settings.backends:
        for deployment, real in backend.deployments.items():
            key = BreakerBoard.key(backend.name, deployment)
            state = gateway.breakers.state(key)
            probe = probes.get(key, {})
            throttled = gateway.router.throttled_until(backend.name, deployment)
            rows.append(
                {
                    "backend": backend.name,
                    "endpoint": backend.endpoint,
                    "priority": backend.priority,
                    "weight": backend.weight,
                    "deployment": deployment,
                    "backend_deployment": real,
                    "breaker": state.status.value,
                    "breaker_reason": state.reason or None,
                    "open_until": _iso(state.open_until) if state.status is not Status.CLOSED else None,
                    "trips": state.trips,
                    "throttled_until": _iso(throttled) if throttled > now else None,
                    "last_probe": {
                        "at": _iso(float(probe["at"])),  # type: ignore[arg-type]  # stored as a number
                        "ok": probe.get("ok"),
                        "status": probe.get("status"),
                        "latency_ms": probe.get("latency_ms"),
                        "error": probe.get("error") or None,
                    }
                    if probe
                    else None,
                }
            )
    return {"instance": gateway.instance_id, "shared_state": gateway.breakers.store_healthy, "data": rows}
