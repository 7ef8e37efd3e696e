"""Date arithmetic: a date N days from or before a given date, written MM/DD/YYYY, as
BIG-Bench-Hard's date_understanding writes dates. Unlike date_understanding the answer is the date
itself, not an option letter: free text, so an answer-only student cannot guess it."""

from __future__ import annotations

import calendar
import datetime
import random

from orca_jax.data.mini_orca.base import Family, Problem, closing

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")  # fmt: skip


def _days(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _month(year: int, month: int) -> str:
    """February carries its year, since its length depends on it."""
    return f"{MONTHS[month - 1]} {year}" if month == 2 else MONTHS[month - 1]


def _next(year: int, month: int, step: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + step
    return index // 12, index % 12 + 1


def _mmddyyyy(date: datetime.date) -> str:
    return date.strftime("%m/%d/%Y")


def _explain(start: datetime.date, days: int) -> tuple[list[str], int]:
    """Day-of-month arithmetic, one month end at a time; returns the sentences and the month ends crossed."""
    year, month = start.year, start.month
    day = start.day + days
    sign = "+" if days > 0 else "-"
    steps = [f"Day {start.day} {sign} {abs(days)} = {day}."]
    crossed = 0
    if days > 0:
        while day > _days(year, month):
            length = _days(year, month)
            ny, nm = _next(year, month, 1)
            into = MONTHS[nm - 1] + (f" {ny}" if ny != year else "")
            steps.append(f"{_month(year, month)} has {length} days: {day} - {length} = {day - length} of {into}.")
            day, year, month, crossed = day - length, ny, nm, crossed + 1
        if not crossed:
            steps.append(f"{_month(year, month)} has {_days(year, month)} days: {day} is in {MONTHS[month - 1]}.")
    else:
        while day <= 0:
            year, month = _next(year, month, -1)
            length = _days(year, month)
            steps.append(f"{MONTHS[month - 1]} {year} has {length} days: {day} + {length} = {day + length} "
                         f"of {MONTHS[month - 1]}.")  # fmt: skip
            day, crossed = day + length, crossed + 1
        if not crossed:
            steps.append(f"{day} is in {MONTHS[month - 1]}.")
    return steps, crossed


def _wrong_length(length: int, month: int) -> int:
    """The classic slip: 30 for a 31-day month and back, 29 for February's 28 and back."""
    if month == 2:
        return 57 - length
    return 61 - length


def make_date_arithmetic(rng: random.Random, hard: bool) -> Problem:
    """Train: 1 to 27 days, at most one month end crossed; hard: 62 to 120 days, two or more."""
    start = datetime.date(rng.randint(1990, 2030), 1, 1) + datetime.timedelta(days=rng.randrange(365))
    days = rng.randint(62, 120) if hard else rng.randint(1, 27)
    days = days if rng.random() < 0.5 else -days
    end = start + datetime.timedelta(days=days)
    unit = "day" if abs(days) == 1 else "days"
    when = f"{days} {unit} from today" if days > 0 else f"{-days} {unit} ago"
    question = f"Today is {_mmddyyyy(start)}. What is the date {when} in MM/DD/YYYY?"
    steps, crossed = _explain(start, days)
    target = _mmddyyyy(end)

    # The intermediate teacher jumps to the date, naming the length of the month it crosses, if any.
    year, month = (start.year, start.month) if days > 0 else _next(start.year, start.month, -1)
    length = _days(year, month)
    counted = f"{abs(days)} {unit} {'from' if days > 0 else 'before'} {_mmddyyyy(start)}"
    if crossed:  # the slip: a wrong length for that month, which moves the date by a day
        wrong_length = _wrong_length(length, month)
        wrong = end + datetime.timedelta(days=(length - wrong_length) * (1 if days > 0 else -1))
    else:  # the slip: counting today as one of the days
        wrong_length, wrong = length, end - datetime.timedelta(days=1 if days > 0 else -1)

    def summary(month_length: int, date: datetime.date) -> str:
        because = f"{_month(year, month)} has {month_length} days, so " if crossed else ""
        return f"{because}{counted} is {_mmddyyyy(date)}. {closing(_mmddyyyy(date))}"

    return Problem(
        question=question,
        target=target,
        strong=" ".join([*steps, f"The date is {target}.", closing(target)]),
        intermediate=summary(length, end),
        flawed=summary(wrong_length, wrong),
        size=crossed,
    )


DATE_ARITHMETIC = Family(
    "date_arithmetic", make_date_arithmetic, "cot", "a date MM/DD/YYYY, e.g. 04/02/2021 (free text, no options)",
    ("1-27 days from or before, at most one month end crossed", "62-120 days, two or more month ends"),
    "date_understanding's date arithmetic, answered with the date instead of an option letter",
)  # fmt: skip
