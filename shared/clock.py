"""Time, injected: every window, TTL and trip duration reads a `Clock` so tests never sleep."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
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


# Instants a caller may give (expiries, report ranges): years 2000 to 2200. Beyond them a value is a
# mistake or a probe, and some of them (1e300, inf, nan) cannot be rendered as a date at all.
EARLIEST_INSTANT = 946_684_800.0  # 2000-01-01T00:00:00Z
LATEST_INSTANT = 7_258_118_400.0  # 2200-01-01T00:00:00Z


def parse_instant(value: object) -> float | None:
    """Epoch seconds from a number, a numeric string, or ISO 8601 (UTC unless it says otherwise).

    None for anything else, and for instants outside years 2000 to 2200 (NaN and infinities included).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        instant: float | None = float(value) if abs(value) < 1e300 else None
    elif not isinstance(value, str):
        return None
    else:
        text = value.strip()
        try:
            instant = float(text)
        except ValueError:
            instant = _iso_instant(text)
    if instant is None or not EARLIEST_INSTANT <= instant < LATEST_INSTANT:  # NaN fails every comparison
        return None
    return instant


def _iso_instant(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):  # year 9999 with a negative offset overflows
        return None


def iso_or_none(epoch: object) -> str | None:
    """An epoch as ISO 8601 UTC for display; None when it is no representable instant (a record stored badly)."""
    if isinstance(epoch, bool) or not isinstance(epoch, int | float) or not math.isfinite(epoch):
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        return None
