"""The operator's view of every backend (breaker, throttle, last probe) and of this instance's counters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.breaker import BreakerBoard, Status
from shared.errors import StoreUnavailable

if TYPE_CHECKING:
    from shared.gateway import Gateway


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


def stats_report(gateway: Gateway) -> dict[str, Any]:
    """Read-only counters of this instance: what shared state costs and whether it is shared right now."""
    return {
        "instance": gateway.instance_id,
        "storage": gateway.stores.stats(),
        "limits": gateway.limiter.stats(),
        "auth": {"stale_answers": gateway.authenticator.stale_answers},
        "breakers": {"shared": gateway.breakers.store_healthy},
        # Attempts given up at a timeout: the backend may still complete and bill them.
        "abandoned": gateway.meter.abandoned.report(),
        "prompt_log": gateway.prompt_log.stats(),
    }
