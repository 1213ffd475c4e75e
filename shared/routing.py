"""Choosing a backend: the lowest priority group with an available backend, weighted random within it.

A backend deployment is unavailable while it is throttled (it said 429 and
when to come back: `Retry-After`, `retry-after-ms`, `x-ratelimit-reset-*`) or
while its circuit breaker is open. Throttle state is kept per (backend,
deployment), not per endpoint: one busy deployment does not hide its siblings.

Files and batches belong to an Azure OpenAI resource, not to a deployment:
they are routed in the pseudo-deployment `ACCOUNT`, which every backend
serves (with its own breaker and throttle state). A call that must reach one
backend (an object stored there: `shared.affinity`) asks for it by name.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.backendconfig import BackendConfig
from shared.breaker import BreakerBoard
from shared.clock import Clock

# Not a possible deployment name (those start with a letter or digit), so it never meets a configured one.
ACCOUNT = "_account"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_retry_after(headers: Mapping[str, str], default: float) -> float:
    """Seconds until a throttled backend deployment should be tried again, from its own headers."""
    ms = _DURATION_RE.match(headers.get("retry-after-ms", ""))
    if ms and ms.group(2) is None:
        return float(ms.group(1)) / 1000
    for name in ("retry-after", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        value = headers.get(name)
        if not value:
            continue
        match = _DURATION_RE.match(value)
        if match:
            number, unit = float(match.group(1)), match.group(2) or "s"
            return number / 1000 if unit == "ms" else number * 60 if unit == "m" else number
    return default


@dataclass(frozen=True, slots=True)
class Candidate:
    backend: BackendConfig
    deployment: str  # the backend's own deployment name
    breaker_key: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Why no candidate is left: the soonest a throttled one returns, if any is merely throttled."""

    retry_after: float | None
    throttled: int
    open_breakers: int


class Router:
    def __init__(
        self,
        backends: Sequence[BackendConfig],
        breakers: BreakerBoard,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._breakers = breakers
        self._clock = clock
        self._rng = rng or random.Random()
        self._throttled: dict[tuple[str, str], float] = {}
        self._by_deployment: dict[str, list[list[BackendConfig]]] = {}
        for deployment in {d for b in backends for d in b.deployments}:
            serving = [b for b in backends if deployment in b.deployments]
            priorities = sorted({b.priority for b in serving})
            self._by_deployment[deployment] = [[b for b in serving if b.priority == p] for p in priorities]
        priorities = sorted({b.priority for b in backends})
        self._by_deployment[ACCOUNT] = [[b for b in backends if b.priority == p] for p in priorities]
        self._backends = {b.name: b for b in backends}

    def knows(self, deployment: str) -> bool:
        return deployment in self._by_deployment and deployment != ACCOUNT

    def count(self, deployment: str) -> int:
        """How many backends serve `deployment` (ACCOUNT: every backend)."""
        return sum(len(group) for group in self._by_deployment.get(deployment, []))

    def serves(self, backend: str, deployment: str) -> bool:
        found = self._backends.get(backend)
        return found is not None and (deployment == ACCOUNT or deployment in found.deployments)

    def throttle(self, backend: str, deployment: str, seconds: float) -> None:
        until = self._clock.now() + seconds
        key = (backend, deployment)
        self._throttled[key] = max(until, self._throttled.get(key, 0.0))

    def throttled_until(self, backend: str, deployment: str) -> float:
        return self._throttled.get((backend, deployment), 0.0)

    def soonest_back(self, deployment: str) -> float | None:
        """Seconds until the first unavailable backend of `deployment` may be tried again (breaker or throttle)."""
        now = self._clock.now()
        waits = []
        for group in self._by_deployment.get(deployment, []):
            for backend in group:
                until = self._throttled.get((backend.name, deployment), 0.0)
                if until > now:
                    waits.append(until - now)
                reopens = self._breakers.reopens_in(BreakerBoard.key(backend.name, deployment))
                if reopens is not None:
                    waits.append(reopens)
        return min(waits) if waits else None

    def _weighted_order(self, group: list[BackendConfig]) -> list[BackendConfig]:
        if len(group) == 1:
            return group
        # Efraimidis-Spirakis: sort by u^(1/w), a weighted random permutation in one pass.
        return sorted(group, key=lambda b: self._rng.random() ** (1.0 / b.weight), reverse=True)

    async def next(self, deployment: str, tried: set[str]) -> Candidate | Unavailable:
        """The next backend to try for `deployment`, skipping `tried` ones."""
        now = self._clock.now()
        soonest: float | None = None
        throttled = open_breakers = 0
        for group in self._by_deployment.get(deployment, []):
            for backend in self._weighted_order(group):
                if backend.name in tried:
                    continue
                until = self._throttled.get((backend.name, deployment), 0.0)
                if until > now:
                    throttled += 1
                    soonest = until - now if soonest is None else min(soonest, until - now)
                    continue
                key = BreakerBoard.key(backend.name, deployment)
                if not await self._breakers.allow(key):
                    open_breakers += 1
                    continue
                return Candidate(backend, backend.deployments.get(deployment, ""), key)
        return Unavailable(soonest, throttled, open_breakers)

    async def pinned(self, deployment: str, backend_name: str) -> Candidate | Unavailable:
        """The one backend an object lives on, if it may be tried now (same throttle and breaker rules)."""
        backend = self._backends.get(backend_name)
        if backend is None or not self.serves(backend_name, deployment):
            return Unavailable(None, 0, 0)
        until = self._throttled.get((backend.name, deployment), 0.0)
        now = self._clock.now()
        if until > now:
            return Unavailable(until - now, 1, 0)
        key = BreakerBoard.key(backend.name, deployment)
        if not await self._breakers.allow(key):
            return Unavailable(None, 0, 1)
        return Candidate(backend, backend.deployments.get(deployment, ""), key)
