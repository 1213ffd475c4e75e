"""The fixed windows limits are counted in, aligned to UTC: rate windows that divide a minute, quota periods."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.models import QuotaPeriod


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # epoch seconds, aligned to UTC
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


NO_WINDOW = Window(-1, 0.0)  # before any: the first use rolls into the current window


def rate_window(now: float, seconds: int) -> Window:
    start = int(now // seconds) * seconds
    return Window(start, float(start + seconds))


def quota_window(now: float, period: QuotaPeriod) -> Window:
    """The fixed UTC period `now` falls in, as APIM counts quotas: hour, day, ISO week (Monday) or month."""
    t = datetime.fromtimestamp(now, UTC)
    if period is QuotaPeriod.HOURLY:
        start = t.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period is QuotaPeriod.DAILY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period is QuotaPeriod.WEEKLY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=t.weekday())
        end = start + timedelta(days=7)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return Window(int(start.timestamp()), end.timestamp())


def utc_iso(epoch: float) -> str:
    """An instant as the quota headers and messages show it: `2027-03-10T12:00:00Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
