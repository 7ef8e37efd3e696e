"""Column addition: "What is 563 + 986?", target "1549".

The strong teacher works one column a line, and each line restates what the next step needs right
before it is needed, so that every token follows from the few before it (a scratchpad a 0.3M-parameter
model can learn to write):

    563+986+0: 3+6+0=9 -> 9. 56+98+0: 6+8+0=14 -> 49. 5+9+1: 5+9+1=15 -> 549. 0+0+1 -> 1549.
    So the answer is 1549.

A line starts with what is left of each number and the carry in ("56+98+0": the units already used
are dropped, so the digits to add are the ones just before "+" and ":"), adds them, and writes the
answer so far with the new digit in front ("49" after "9"): the answer is built in reading order, and
the last line holds it whole. A number that has run out is left as 0.
"""

from __future__ import annotations

import random

from orca_jax.datagen.mini_orca.base import Family, Problem, closing

COLUMNS = "abcdefgh"  # column names from the right: a is the units


def _named_digits(number: int, width: int) -> str:
    """563 at width 4 -> "0d 5c 6b 3a": each digit with its column's name, so that finding a column's
    digit is a look-up by name rather than a count of positions."""
    digits = str(number).zfill(width)
    return " ".join(f"{d}{COLUMNS[width - 1 - i]}" for i, d in enumerate(digits))


def _column_work(a: int, b: int, *, running: bool, slip: int = -1) -> str:
    """The numbers restated by column, then one line per column. `running` writes the answer so far
    after each column (the strong teacher); without it the answer's digits are gathered silently at
    the end (the intermediate teacher). Column `slip` gets its carry in wrong (forgotten, or added
    where there is none) and the slip is carried to the answer."""
    width = max(len(str(a)), len(str(b)))
    steps = [f"{a}: {_named_digits(a, width)}. {b}: {_named_digits(b, width)}."]
    carry, written = 0, ""
    for column in range(width):
        x, y = a // 10**column % 10, b // 10**column % 10
        carry = 1 - carry if column == slip else carry
        total = x + y + carry
        written = str(total % 10) + written
        steps.append(f"{COLUMNS[column]}: {x}+{y}+{carry}={total}" + (f" -> {written}." if running else "."))
        carry = total // 10
    if carry:
        written = f"{carry}{written}"
        steps.append(f"carry {carry} -> {written}." if running else f"carry {carry}.")
    return " ".join([*steps, closing(written)])


def explain_addition(a: int, b: int) -> str:
    """The strong teacher's response for `a + b`, ending in `So the answer is {a + b}.`"""
    return _column_work(a, b, running=True)


def addition_question(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def make_addition(rng: random.Random, hard: bool) -> Problem:
    """Train: each number 2 to 5 digits; hard: both 5 digits."""
    low, high = (5, 5) if hard else (2, 5)
    a, b = (rng.randint(10 ** (n - 1), 10**n - 1) for n in (rng.randint(low, high), rng.randint(low, high)))
    # The slip: a carry forgotten, or one added where there is none, in a column past the first.
    columns = max(len(str(a)), len(str(b)))
    carried = [i for i in range(1, columns) if a % 10**i + b % 10**i >= 10**i]
    return Problem(
        question=addition_question(a, b),
        target=str(a + b),
        strong=explain_addition(a, b),
        intermediate=_column_work(a, b, running=False),
        flawed=_column_work(a, b, running=False, slip=rng.choice(carried or range(1, columns))),
        size=columns,
    )


ADDITION = Family(
    "addition", make_addition, "cot", "an integer",
    ("numbers of 2 to 5 digits", "both numbers of 5 digits"),
    "no BIG-Bench-Hard task (the arithmetic of multistep_arithmetic_two, one column at a time)",
)  # fmt: skip
