"""NCRONTAB schedules as Azure Functions timer triggers write them: six fields, seconds first, in UTC.

`{second} {minute} {hour} {day} {month} {day-of-week}`; each field is `*`,
a number, a range `a-b`, a list `a,b`, or a step `*/n` / `a-b/n`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _field(text: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(base)
            end = hi if step_text else start
        if not (lo <= start <= hi and lo <= end <= hi) or step < 1:
            raise ValueError(f"{text!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        fields = expression.split()
        if len(fields) != 6:
            raise ValueError(f"NCRONTAB needs six fields (seconds first): {expression!r}")
        parsed = [_field(f, lo, hi) for f, (lo, hi) in zip(fields, _RANGES, strict=True)]
        return cls(*parsed)

    def matches(self, t: datetime) -> bool:
        return (
            t.second in self.seconds
            and t.minute in self.minutes
            and t.hour in self.hours
            and t.day in self.days
            and t.month in self.months
            and (t.isoweekday() % 7) in self.weekdays
        )

    def next_after(self, epoch: float) -> float:
        """The first matching whole second strictly after `epoch`."""
        t = datetime.fromtimestamp(int(epoch) + 1, UTC)
        limit = t + timedelta(days=366)
        while t < limit:
            if t.month not in self.months or t.day not in self.days or (t.isoweekday() % 7) not in self.weekdays:
                t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0, second=0)
            elif t.minute not in self.minutes:
                t = (t + timedelta(minutes=1)).replace(second=0)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t.timestamp()
        raise ValueError("schedule never fires within a year")
