"""NCRONTAB as the Functions timer trigger reads it: the documented examples, names, steps, and what Azure refuses.

The examples are the ones in the Azure Functions timer trigger documentation
("NCRONTAB expressions" and "NCRONTAB examples"); the finer points (name
prefixes, backwards ranges, day AND day-of-week) are NCrontab's own test cases.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from local.ncrontab import Schedule


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def occurrences(expression: str, after: str, n: int) -> list[str]:
    schedule, t, out = Schedule.parse(expression), at(after), []
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %a %H:%M:%S"))
    return out


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # The documentation's table of field forms.
        ("0 5 * * * *", "2026-01-01T10:00:00", ["2026-01-01 Thu 10:05:00", "2026-01-01 Thu 11:05:00"]),
        ("0 * 5 * * *", "2026-01-01T05:58:30", ["2026-01-01 Thu 05:59:00", "2026-01-02 Fri 05:00:00"]),
        ("5-7 * * * * *", "2026-01-01T00:00:00", ["2026-01-01 Thu 00:00:05", "2026-01-01 Thu 00:00:06",
                                                  "2026-01-01 Thu 00:00:07", "2026-01-01 Thu 00:01:05"]),
        ("5,8,10 * * * * *", "2026-01-01T00:00:06", ["2026-01-01 Thu 00:00:08", "2026-01-01 Thu 00:00:10",
                                                     "2026-01-01 Thu 00:01:05"]),
        # The documentation's list of examples.
        ("0 */5 * * * *", "2026-01-01T00:03:00", ["2026-01-01 Thu 00:05:00", "2026-01-01 Thu 00:10:00"]),
        ("0 0 * * * *", "2026-01-01T00:00:00", ["2026-01-01 Thu 01:00:00", "2026-01-01 Thu 02:00:00"]),
        ("0 0 */2 * * *", "2026-01-01T01:00:00", ["2026-01-01 Thu 02:00:00", "2026-01-01 Thu 04:00:00"]),
        ("0 0 9-17 * * *", "2026-01-01T16:30:00", ["2026-01-01 Thu 17:00:00", "2026-01-02 Fri 09:00:00"]),
        ("0 30 9 * * *", "2026-01-01T10:00:00", ["2026-01-02 Fri 09:30:00", "2026-01-03 Sat 09:30:00"]),
        ("0 30 9 * * 1-5", "2026-01-02T10:00:00", ["2026-01-05 Mon 09:30:00", "2026-01-06 Tue 09:30:00"]),
        ("0 30 9 * Jan Mon", "2026-01-20T00:00:00", ["2026-01-26 Mon 09:30:00", "2027-01-04 Mon 09:30:00"]),
    ],
)  # fmt: skip
def test_the_documented_examples(expression: str, after: str, expected: list[str]) -> None:
    assert occurrences(expression, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("spelled", "plain"),
    [
        ("0 0 9 * * Mon-Fri", "0 0 9 * * 1-5"),
        ("0 0 9 * * mon-fri", "0 0 9 * * 1-5"),
        ("0 0 9 * January Monday", "0 0 9 * 1 1"),
        ("0 0 9 * JAN MON", "0 0 9 * 1 1"),
        ("0 0 9 * * Sun,Sat", "0 0 9 * * 0,6"),
        # Any prefix of the English name, as NCrontab reads names; an ambiguous prefix is the first name.
        ("0 0 0 * january,FeB,Mar,april,May,JuNE,July,Augu,SEPT-October,Nov,DECEM *", "0 0 0 * * *"),
        ("0 0 0 * Ma *", "0 0 0 * 3 *"),
        ("0 0 0 * * T", "0 0 0 * * 2"),
        # Steps from a value run to the field's end; a range written backwards is the same range.
        ("2/5 * * * * *", "2,7,12,17,22,27,32,37,42,47,52,57 * * * * *"),
        ("0 0 14/1 * * *", "0 0 14-23 * * *"),
        ("0 0 17-9 * * *", "0 0 9-17 * * *"),
        ("0 0 0 * * Mon-Fri/2", "0 0 0 * * 1,3,5"),
        ("0 0 0 * Jan-Dec/3 *", "0 0 0 * 1,4,7,10 *"),
        ("0  0   0 * *   *", "0 0 0 * * *"),  # any run of spaces separates fields
    ],
)
def test_names_steps_and_ranges_mean_what_ncrontab_says(spelled: str, plain: str) -> None:
    assert Schedule.parse(spelled) == Schedule.parse(plain)


def test_day_and_day_of_week_must_both_match() -> None:
    """NCrontab's own case: the 1st of a month that is a Monday (cron would take either)."""
    assert occurrences("0 45 16 1 * Mon", "2003-01-01T12:00:00", 2) == [
        "2003-09-01 Mon 16:45:00",
        "2003-12-01 Mon 16:45:00",
    ]


def test_a_rare_date_is_found_and_an_impossible_one_is_refused() -> None:
    assert occurrences("0 0 0 29 Feb Mon", "2026-01-01T00:00:00", 1) == ["2044-02-29 Mon 00:00:00"]
    with pytest.raises(ValueError, match="never fires"):
        Schedule.parse("0 0 0 31 Feb *").next_after(at("2026-01-01T00:00:00"))


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("0 0 0 * * 7", r"day of the week 7 is outside 0-6"),  # NCrontab (so Azure) refuses 7: write 0 or Sun
        ("0 0 0 * * Mon-7", r"outside 0-6"),
        ("0 0 0 * Foo *", r"'Foo' is not a valid month"),
        ("0 0 0 * * Mun", r"'Mun' is not a valid day of the week"),
        ("0 0 0 * * mon,bad,wed", r"'bad' is not a valid day of the week"),
        ("0 0 Jan * * *", r"'Jan' is not a valid hour"),
        ("0 0 0 0 * *", r"day 0 is outside 1-31"),
        ("0 0 0 * 13 *", r"month 13 is outside 1-12"),
        ("* 1/Z * * * *", r"step 'Z'"),
        ("* 3-l2 * * * *", r"'l2' is not a valid minute"),
        ("* 1,,2 * * * *", r"'' is not a valid minute"),
        ("0 0 0 * * * *", r"six fields"),
    ],
)
def test_what_the_functions_host_refuses_is_refused_with_the_reason(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Schedule.parse(bad)
