"""Families about a few people: tracking shuffled objects (BIG-Bench-Hard's
tracking_shuffled_objects, 3 objects; hard: 5) and logical deduction with ordering constraints
(logical_deduction, 3 objects; hard: 5). Targets are option letters, "(A)".."(E)", with the options
listed under "Options:" as BIG-Bench-Hard lists them."""

from __future__ import annotations

import random

from orca_jax.data.mini_orca.base import Family, Problem, closing, letter, options_block

# Short names and colours keep a 3-object question with its full explanation inside a 384-byte row.
NAMES = ("Ann", "Bob", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou", "Max", "Ned")
COLOURS = ("red", "tan", "blue", "pink", "gray", "gold", "teal", "lime", "navy", "jade", "rose", "plum")


def _listing(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}"


# Tracking shuffled objects.


def _swap(state: dict[str, str], pair: tuple[str, str]) -> dict[str, str]:
    a, b = pair
    return {**state, a: state[b], b: state[a]}


def _history(start: dict[str, str], swaps: list[tuple[str, str]], skip: int = -1) -> list[dict[str, str]]:
    """The holdings after each swap; swap `skip` is forgotten (the intermediate teacher's slip)."""
    states, state = [], start
    for i, pair in enumerate(swaps):
        if i != skip:
            state = _swap(state, pair)
        states.append(state)
    return states


def _follow(who: str, swaps: list[tuple[str, str]], states: list[dict[str, str]], answer: str) -> str:
    """The intermediate teacher: only the asked person's object after each swap."""
    trail = ", ".join(f"{s[who]} after {a}-{b}" for (a, b), s in zip(swaps, states, strict=True))
    return f"{who} has {trail}. {closing(answer)}"


def make_tracking(rng: random.Random, hard: bool) -> Problem:
    """Train: 3 people and 3 swaps; hard: 5 people and 5 swaps."""
    n = 5 if hard else 3
    while True:
        names, colours = rng.sample(NAMES, n), rng.sample(COLOURS, n)
        start = dict(zip(names, colours, strict=True))
        swaps: list[tuple[str, str]] = []
        while len(swaps) < n:
            a, b = rng.sample(names, 2)
            if not swaps or {a, b} != set(swaps[-1]):  # an immediate swap back would undo the last
                swaps.append((a, b))
        who = rng.choice(names)
        states = _history(start, swaps)
        answer = f"({letter(colours.index(states[-1][who]))})"
        slips = [i for i in range(n) if _history(start, swaps, skip=i)[-1][who] != states[-1][who]]
        if slips:
            break
    holdings = ", ".join(f"{p} has {c}" for p, c in start.items())
    order = ", then ".join(f"{a}-{b}" for a, b in swaps)
    question = f"{holdings}. Swaps: {order}. At the end, {who} has\n{options_block(colours)}"
    steps = [f"{a}-{b}: " + ", ".join(f"{p} {s[p]}" for p in names) + "."
             for (a, b), s in zip(swaps, states, strict=True)]  # fmt: skip
    wrong_states = _history(start, swaps, skip=rng.choice(slips))
    wrong = f"({letter(colours.index(wrong_states[-1][who]))})"
    return Problem(
        question=question,
        target=answer,
        strong=" ".join([*steps, f"{who} has {states[-1][who]}.", closing(answer)]),
        intermediate=_follow(who, swaps, states, answer),
        flawed=_follow(who, swaps, wrong_states, wrong),
        size=n,
    )


# Logical deduction.


def _position(k: int, n: int) -> str:
    if k == 0:
        return "the leftmost"
    if k == n - 1:
        return "the rightmost"
    if 2 * k == n - 1:
        return "in the middle"
    return "second from the left" if k == 1 else "second from the right"


def _clue(left: str, right: str, rng: random.Random) -> str:
    return f"{left} is left of {right}" if rng.random() < 0.5 else f"{right} is right of {left}"


def make_logical_deduction(rng: random.Random, hard: bool) -> Problem:
    """Train: 3 people and 2 clues; hard: 5 people and 4 clues. The clues name neighbours in the row,
    so they fix the order; each clue after the first shares a person with an earlier one, so the
    explanation grows the row one person at a time."""
    n = 5 if hard else 3
    listed = rng.sample(NAMES, n)
    row = rng.sample(listed, n)
    first = rng.randrange(n - 1)  # clue i says row[i] is left of row[i + 1]
    order, low, high = [first], first, first
    while len(order) < n - 1:
        grow = [i for i in (low - 1, high + 1) if 0 <= i < n - 1]
        i = rng.choice(grow)
        order.append(i)
        low, high = min(low, i), max(high, i)
    clues = [_clue(row[i], row[i + 1], rng) for i in order]
    k = rng.randrange(n)
    who = row[k]
    where = _position(k, n)
    question = (f"{_listing(listed)} stand in a row. " + " ".join(c + "." for c in clues)
                + f" Who is {where}?\n{options_block(listed)}")  # fmt: skip
    steps, low, high = [], order[0], order[0] + 1
    for i, clue in zip(order, clues, strict=True):
        low, high = min(low, i), max(high, i + 1)
        steps.append(f"{clue}: {' '.join(row[low : high + 1])}.")
    answer = f"({letter(listed.index(who))})"
    # The slip: two neighbours in the row swapped, one of them the asked position.
    j = k + rng.choice([d for d in (-1, 1) if 0 <= k + d < n])
    wrong_row = list(row)
    wrong_row[k], wrong_row[j] = wrong_row[j], wrong_row[k]
    wrong = f"({letter(listed.index(wrong_row[k]))})"
    return Problem(
        question=question,
        target=answer,
        strong=" ".join([*steps, f"{who} is {where}.", closing(answer)]),
        intermediate=f"The order from the left is {' '.join(row)}. {who} is {where}. {closing(answer)}",
        flawed=f"The order from the left is {' '.join(wrong_row)}. {wrong_row[k]} is {where}. {closing(wrong)}",
        size=n,
    )


TRACKING_SHUFFLED_OBJECTS = Family(
    "tracking_shuffled_objects", make_tracking, "flan", 'an option letter, "(A)".."(E)"',
    ("3 people, 3 swaps", "5 people, 5 swaps"),
    "tracking_shuffled_objects_three_objects (hard: five_objects), with colours and short names",
)  # fmt: skip
LOGICAL_DEDUCTION = Family(
    "logical_deduction", make_logical_deduction, "flan", 'an option letter, "(A)".."(E)"',
    ("3 people, 2 clues", "5 people, 4 clues"),
    "logical_deduction_three_objects (hard: five_objects), with left-of clues between neighbours",
)  # fmt: skip
