"""Time, injected: every window, TTL and trip duration reads a `Clock` so tests never sleep."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (wall time: windows align to UTC and state is shared across hosts)."""
        ...


class SystemClock:
    __slots__ = ()

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock tests move by hand."""

    __slots__ = ("t",)

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


SYSTEM_CLOCK = SystemClock()
