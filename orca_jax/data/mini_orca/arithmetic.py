"""Arithmetic families: multi-step arithmetic (BIG-Bench-Hard's multistep_arithmetic_two, with + and
- only) and the original column addition (the first mini-Orca task, kept as an optional family)."""

from __future__ import annotations

import random

from orca_jax.data.mini_orca.base import Family, Problem, closing

# Multi-step arithmetic.


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y


def _flip(op: str) -> str:
    return "-" if op == "+" else "+"


def _evaluate(groups: list[tuple[int, str, int]], outer: list[str]) -> tuple[list[int], list[int]]:
    """Each bracket's value, then the running total after each outer operation (left to right)."""
    values = [_apply(a, op, b) for a, op, b in groups]
    totals = [values[0]]
    for op, v in zip(outer, values[1:], strict=True):
        totals.append(_apply(totals[-1], op, v))
    return values, totals


def _intermediate(values: list[int], outer: list[str], total: int) -> str:
    """Only the outer operations, on the brackets' values worked out silently."""
    expression = str(values[0]) + "".join(f" {op} {v}" for op, v in zip(outer, values[1:], strict=True))
    return f"{expression} = {total}. {closing(str(total))}"


def make_multistep_arithmetic(rng: random.Random, hard: bool) -> Problem:
    """Train: two brackets of two numbers from -9 to 9 (three operations); hard: three brackets (five).
    + and - only, so that every step is one fact the mini model can learn."""
    num_groups = 3 if hard else 2
    while True:
        groups = [(rng.randint(-9, 9), rng.choice("+-"), rng.randint(-9, 9)) for _ in range(num_groups)]
        outer = [rng.choice("+-") for _ in range(num_groups - 1)]
        # The intermediate teacher's slip flips one bracket's sign; it needs a non-zero second number.
        slips = [i for i, (_, _, b) in enumerate(groups) if b != 0]
        if slips:
            break
    values, totals = _evaluate(groups, outer)
    brackets = [f"({a} {op} {b})" for a, op, b in groups]
    question = "(" + brackets[0] + "".join(f" {op} {br}" for op, br in zip(outer, brackets[1:], strict=True)) + ") ="
    steps = [f"{a} {op} {b} = {v}." for (a, op, b), v in zip(groups, values, strict=True)]
    steps += [f"{totals[i]} {op} {values[i + 1]} = {totals[i + 1]}." for i, op in enumerate(outer)]
    target = str(totals[-1])

    i = rng.choice(slips)
    a, op, b = groups[i]
    slipped = [*groups[:i], (a, _flip(op), b), *groups[i + 1 :]]
    wrong_values, wrong_totals = _evaluate(slipped, outer)
    return Problem(
        question=question,
        target=target,
        strong=" ".join([*steps, closing(target)]),
        intermediate=_intermediate(values, outer, totals[-1]),
        flawed=_intermediate(wrong_values, outer, wrong_totals[-1]),
        size=2 * num_groups,
    )


# Column addition.


def explain_addition(a: int, b: int) -> str:
    """The teacher's step-by-step response for `a + b`, ending in `So the answer is {a + b}.`"""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        total = x + y + carry
        expr = f"{x}+{y}" + (f"+{carry}" if carry else "")
        carry = total // 10
        steps.append(f"{expr}={total}, write {total % 10}" + (f" carry {carry}." if carry else "."))
    if carry:
        steps.append(f"Write the last carry {carry}.")
    steps.append(f"So the answer is {a + b}.")
    return " ".join(steps)


def addition_question(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def _column_summary(total: int, columns: int) -> str:
    digits = str(total)[::-1]
    text = "The columns from the right give " + ", ".join(digits[:columns])
    if len(digits) > columns:
        text += f", then the last carry {digits[columns:][::-1]}"
    return f"{text}. {closing(str(total))}"


def make_addition(rng: random.Random, hard: bool) -> Problem:
    """Train: two 3-digit numbers; hard: two 5-digit numbers."""
    digits = 5 if hard else 3
    a, b = (rng.randint(10 ** (digits - 1), 10**digits - 1) for _ in range(2))
    carries = [i for i in range(digits) if a % 10 ** (i + 1) + b % 10 ** (i + 1) >= 10 ** (i + 1)]
    # The slip: forgetting one carry (the next column misses it), or adding one where there is none.
    column = rng.choice(carries) if carries else rng.randrange(digits - 1)
    wrong = a + b + (-1 if carries else 1) * 10 ** (column + 1)
    return Problem(
        question=addition_question(a, b),
        target=str(a + b),
        strong=explain_addition(a, b),
        intermediate=_column_summary(a + b, digits),
        flawed=_column_summary(wrong, digits),
        size=digits,
    )


MULTISTEP_ARITHMETIC = Family(
    "multistep_arithmetic", make_multistep_arithmetic, "cot", "an integer, e.g. -3",
    ("two brackets of two numbers in -9..9 (+ and -)", "three brackets"),
    "multistep_arithmetic_two, with + and - only and two numbers per bracket",
)  # fmt: skip
ADDITION = Family("addition", make_addition, "cot", "an integer", ("3-digit operands", "5-digit operands"))
