"""Tracking shuffled objects, as BIG-Bench-Hard's tracking_shuffled_objects: who holds what after a
series of swaps, target an option letter "(A)".."(E)" with the options listed under "Options:".

The swaps are numbered, and the strong teacher restates everyone's object after each swap, so each
line is the line before it with two objects exchanged, and the swap it applies is found by its number:

    Ann has red, Bob has tan, Cal has blue. Swaps: 1. Ann-Bob, 2. Bob-Cal, 3. Ann-Cal. At the end, Bob has
    Options:
    (A) red
    (B) tan
    (C) blue

    0. Ann red, Bob tan, Cal blue. 1. Ann-Bob: Ann tan, Bob red, Cal blue. 2. Bob-Cal: Ann tan, Bob blue,
    Cal red. 3. Ann-Cal: Ann red, Bob blue, Cal tan. Bob has blue, (C) blue. So the answer is (C).
"""

from __future__ import annotations

import random

from orca_jax.datagen.mini_orca.base import Family, Problem, closing, letter, options_block

# Short names and colours keep a question with its full explanation inside the run's rows.
NAMES = ("Ann", "Bob", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou", "Max", "Ned")
# Every name has three letters and every colour four, so each line of the strong teacher's answer
# has the same length, and a person's object in the line before is always the same distance back.
COLOURS = ("ruby", "sand", "blue", "pink", "gray", "gold", "teal", "lime", "navy", "jade", "rose", "plum")


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


def _follow(who: str, swaps: list[tuple[str, str]], states: list[dict[str, str]], option: str) -> str:
    """The intermediate teacher: only the asked person's object after each swap."""
    trail = ", ".join(f"{s[who]} after {a}-{b}" for (a, b), s in zip(swaps, states, strict=True))
    return f"{who} has {trail}. {closing(option)}"


def make_tracking(rng: random.Random, hard: bool) -> Problem:
    """Train: 3 people and 2 to 5 swaps; hard: 3 people and 5 swaps."""
    n, num_swaps = 3, (5 if hard else rng.randint(2, 5))
    while True:
        names, colours = rng.sample(NAMES, n), rng.sample(COLOURS, n)
        start = dict(zip(names, colours, strict=True))
        swaps: list[tuple[str, str]] = []
        while len(swaps) < num_swaps:
            a, b = rng.sample(names, 2)
            if not swaps or {a, b} != set(swaps[-1]):  # an immediate swap back would undo the last
                swaps.append((a, b))
        who = rng.choice(names)
        states = _history(start, swaps)
        slips = [i for i in range(num_swaps) if _history(start, swaps, skip=i)[-1][who] != states[-1][who]]
        if slips:
            break

    def option(colour: str) -> str:
        return f"({letter(colours.index(colour))})"

    holdings = ", ".join(f"{p} has {c}" for p, c in start.items())
    order = ", ".join(f"{i + 1}. {a}-{b}" for i, (a, b) in enumerate(swaps))
    question = f"{holdings}. Swaps: {order}. At the end, {who} has\n{options_block(colours)}"
    lines = ["0. Start: " + ", ".join(f"{p} {c}" for p, c in start.items()) + "."]
    lines += [f"{i + 1}. {a}-{b}: " + ", ".join(f"{p} {s[p]}" for p in names) + "."
              for i, ((a, b), s) in enumerate(zip(swaps, states, strict=True))]  # fmt: skip
    end = states[-1][who]
    wrong_states = _history(start, swaps, skip=rng.choice(slips))
    return Problem(
        question=question,
        target=option(end),
        strong=" ".join([*lines, f"{who} has {end}, {option(end)} {end}.", closing(option(end))]),
        intermediate=_follow(who, swaps, states, option(end)),
        flawed=_follow(who, swaps, wrong_states, option(wrong_states[-1][who])),
        size=num_swaps,
    )


TRACKING_SHUFFLED_OBJECTS = Family(
    "tracking_shuffled_objects", make_tracking, "flan", 'an option letter, "(A)".."(C)"',
    ("3 people, 2 to 5 swaps", "3 people, 5 swaps"),
    "tracking_shuffled_objects_three_objects, with numbered swaps, colours and short names",
)  # fmt: skip
