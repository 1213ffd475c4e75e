"""Per-deployment token and request limits over a sliding 60 s window, as Azure OpenAI enforces them.

A request is charged up front (prompt tokens plus the completion tokens it may
produce, like Azure's estimate), and the charge stays in the window for 60 s.
Time comes from an injected clock, so tests step past a window without sleeping.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from simulator.config import Limits

WINDOW_SECONDS = 60.0


class Clock(Protocol):
    """Wall time in seconds. Matches `shared.clock.Clock`, so the gateway's ManualClock works here too."""

    def now(self) -> float: ...


class SystemClock:
    __slots__ = ()

    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's answer. Remaining counts are None for a limit that is not set."""

    allowed: bool
    remaining_tokens: int | None = None
    remaining_requests: int | None = None
    retry_after_ms: int = 0
    reason: str = ""  # "tokens" or "requests" when refused

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds for `Retry-After`: rounded up, never 0, so a client that obeys it always gets in."""
        return max(1, math.ceil(self.retry_after_ms / 1000))


UNLIMITED = Admission(allowed=True)


def limit_headers(admission: Admission) -> dict[str, str] | None:
    """The x-ratelimit-remaining-* headers Azure sends with an admitted request (none for unlimited deployments)."""
    if admission.remaining_tokens is None and admission.remaining_requests is None:
        return None
    headers = {}
    if admission.remaining_tokens is not None:
        headers["x-ratelimit-remaining-tokens"] = str(admission.remaining_tokens)
    if admission.remaining_requests is not None:
        headers["x-ratelimit-remaining-requests"] = str(admission.remaining_requests)
    return headers


class Window:
    """The charges of one deployment in the last 60 s, oldest first."""

    __slots__ = ("_charges", "_clock", "_limits", "_used")

    def __init__(self, limits: Limits, clock: Clock) -> None:
        self._limits = limits
        self._clock = clock
        self._charges: deque[tuple[float, int]] = deque()
        self._used = 0

    def admit(self, tokens: int) -> Admission:
        now = self._clock.now()
        self._expire(now)
        tpm, rpm = self._limits.tpm, self._limits.rpm
        if rpm is not None and len(self._charges) + 1 > rpm:
            # The request that frees a slot is the one `rpm` places from the end.
            opens_at = self._charges[len(self._charges) - rpm][0] + WINDOW_SECONDS
            return self._refuse(opens_at - now, "requests")
        if tpm is not None and self._used + tokens > tpm:
            return self._refuse(self._tokens_free_at(tokens, tpm) - now, "tokens")
        self._charges.append((now, tokens))
        self._used += tokens
        return Admission(
            allowed=True,
            remaining_tokens=None if tpm is None else tpm - self._used,
            remaining_requests=None if rpm is None else rpm - len(self._charges),
        )

    def _expire(self, now: float) -> None:
        cutoff = now - WINDOW_SECONDS
        while self._charges and self._charges[0][0] <= cutoff:
            self._used -= self._charges.popleft()[1]

    def _tokens_free_at(self, tokens: int, tpm: int) -> float:
        used = self._used
        for at, charged in self._charges:
            used -= charged
            if used + tokens <= tpm:
                return at + WINDOW_SECONDS
        # A charge larger than the whole limit never fits; say "when the window is empty", as the best hint.
        return (self._charges[-1][0] if self._charges else self._clock.now()) + WINDOW_SECONDS

    def _refuse(self, seconds: float, reason: str) -> Admission:
        return Admission(
            allowed=False,
            remaining_tokens=0 if reason == "tokens" else None,
            remaining_requests=0 if reason == "requests" else None,
            retry_after_ms=max(1, math.ceil(seconds * 1000)),
            reason=reason,
        )


class Limiter:
    """One window per limited deployment; deployments without limits are admitted without bookkeeping."""

    __slots__ = ("_clock", "_limits", "_windows")

    def __init__(self, limits: Mapping[str, Limits], clock: Clock) -> None:
        self._limits = {name: lim for name, lim in limits.items() if lim.tpm is not None or lim.rpm is not None}
        self._clock = clock
        self._windows: dict[str, Window] = {}
        self.reset()

    def admit(self, deployment: str, tokens: int) -> Admission:
        window = self._windows.get(deployment)
        return UNLIMITED if window is None else window.admit(tokens)

    def reset(self) -> None:
        self._windows = {name: Window(lim, self._clock) for name, lim in self._limits.items()}
