"""The health probe the timer trigger runs.

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
from typing import TYPE_CHECKING

from shared.breaker import BreakerBoard
from shared.errors import AttemptFailed, StoreUnavailable
from shared.models import DEFAULT_API_VERSION
from shared.upstream import deployment_url, mapped, request_headers

if TYPE_CHECKING:
    from shared.backendconfig import BackendConfig
    from shared.gateway import Gateway

log = logging.getLogger("gateway.probe")

PROBE_TIMEOUT = 10.0


def _probe_request(gateway_deployment: str) -> tuple[str, bytes]:
    if "embed" in gateway_deployment.lower():
        return "embeddings", b'{"input":"ping"}'
    return "chat/completions", json.dumps({"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}).encode()


async def probe_one(gateway: Gateway, backend: BackendConfig, deployment: str) -> dict[str, object]:
    operation, body = _probe_request(deployment)
    url = deployment_url(backend.endpoint, backend.deployments[deployment], operation)
    started = time.perf_counter()
    outcome: dict[str, object] = {"at": gateway.clock.now()}
    try:
        credential = await gateway.credentials[backend.name].headers()
        headers = request_headers({}, f"probe-{int(time.time())}", credential)
        session = await gateway.session()
        with mapped():
            async with (
                asyncio.timeout(PROBE_TIMEOUT),
                session.post(url, params={"api-version": DEFAULT_API_VERSION}, data=body, headers=headers) as resp,
            ):
                await resp.read()
                outcome.update(status=resp.status, ok=resp.status < 500, error="")
    except AttemptFailed as failed:
        outcome.update(status=0, ok=False, error=failed.outcome)
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
