"""NCRONTAB schedules as Azure Functions timer triggers write them: six fields, seconds first, in UTC.

`{second} {minute} {hour} {day} {month} {day-of-week}`. Each field is a list
(`a,b`) of parts; a part is `*`, a value, a range `a-b`, or any of these with
a step (`*/n`, `a-b/n`, `a/n` = from a to the field's maximum every n).

This follows NCrontab (atifaziz/NCrontab), the library the Functions timer
extension parses schedules with, where it differs from classic cron:
- months and days of the week may be written as English names, in any case
  and as any prefix of the name (`Jan`, `january`, `Augu`, `Mon`, `MONDAY`);
  a prefix matching two names means the first (`Ma` is March, `T` Tuesday);
- day-of-week runs 0-6 with 0 for Sunday; NCrontab refuses 7, so this does too
  (a schedule accepted here must also start in Azure);
- a range written backwards (`5-1`) is the same range forwards;
- when both day and day-of-week are restricted, a time must match both (cron
  would take either).

Kept on purpose instead of a library: croniter and cronsim take only
three-letter names, take 7 for Sunday, and (cronsim, and croniter by default)
fire when *either* day field matches, so each would accept schedules Azure
refuses and fire on days Azure would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")  # fmt: skip
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()

    def value(self, text: str) -> int:
        if text.isdigit():
            number = int(text)
            if not self.lo <= number <= self.hi:
                raise ValueError(f"{self.name} {number} is outside {self.lo}-{self.hi}")
            return number
        lowered = text.lower()
        if self.names and lowered:
            for index, full in enumerate(self.names):
                if full.startswith(lowered):
                    return self.lo + index
        if self.names:
            example = self.names[1].title()
            raise ValueError(
                f"{text!r} is not a valid {self.name} (a number {self.lo}-{self.hi} or a name such as {example})"
            )
        raise ValueError(f"{text!r} is not a valid {self.name} (a number {self.lo}-{self.hi})")

    def parse(self, text: str) -> frozenset[int]:
        values: set[int] = set()
        for part in text.split(","):
            base, slash, step_text = part.partition("/")
            if slash and not step_text.isdigit():
                raise ValueError(f"step {step_text!r} in {text!r} is not a number")
            step = int(step_text) if slash else 1
            if step < 1:
                raise ValueError(f"step {step} in {text!r}: a step is at least 1")
            if base == "*":
                start, end = self.lo, self.hi
            elif "-" in base:
                first, _, last = base.partition("-")
                start, end = sorted((self.value(first), self.value(last)))
            else:
                start = self.value(base)
                end = self.hi if slash else start
            values.update(range(start, end + 1, step))
        return frozenset(values)


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of the week", 0, 6, _DAYS),
)


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
        try:
            parsed = [field.parse(text) for field, text in zip(_FIELDS, fields, strict=True)]
        except ValueError as exc:
            raise ValueError(f"NCRONTAB {expression!r}: {exc}") from None
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
        # The Gregorian calendar repeats every 400 years: a schedule with no match in that span never fires
        # (`0 0 0 31 Feb *`); one such as `0 0 0 29 Feb Mon` may wait 28 years and still does.
        limit = t + timedelta(days=146_097)  # 400 Gregorian years
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0)
            elif t.day not in self.days or (t.isoweekday() % 7) not in self.weekdays:
                t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0, second=0)
            elif t.minute not in self.minutes:
                t = (t + timedelta(minutes=1)).replace(second=0)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t.timestamp()
        raise ValueError("schedule never fires (no matching date in 400 years)")
