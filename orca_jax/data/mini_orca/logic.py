"""Boolean expressions, as BIG-Bench-Hard's boolean_expressions: `not ( True or False ) and True is`,
target "True" or "False". Python's precedence (not > and > or) is what the text means."""

from __future__ import annotations

import random

from orca_jax.data.mini_orca.base import Family, Problem, closing

# A node is ("lit", value), ("not", child), or ("and" | "or", left, right).
Node = tuple
PRECEDENCE = {"or": 1, "and": 2, "not": 3, "lit": 4}
NOT_RATE = 0.25  # each node is negated with this chance


def _tree(rng: random.Random, leaves: int) -> Node:
    if leaves == 1:
        node: Node = ("lit", rng.random() < 0.5)
        if rng.random() < 0.1:  # BIG-Bench-Hard's "not not True"
            node = ("not", node)
    else:
        split = rng.randint(1, leaves - 1)
        node = (rng.choice(("and", "or")), _tree(rng, split), _tree(rng, leaves - split))
    return ("not", node) if rng.random() < NOT_RATE else node


def _text(node: Node) -> str:
    kind = node[0]
    if kind == "lit":
        return str(node[1])
    if kind == "not":
        inner = _text(node[1])
        return "not " + (f"( {inner} )" if node[1][0] in ("and", "or") else inner)
    left, right = _text(node[1]), _text(node[2])
    # A same-precedence right operand keeps its brackets, so the text's left-to-right reading and the
    # explanation's order of steps agree.
    if PRECEDENCE[node[1][0]] < PRECEDENCE[kind]:
        left = f"( {left} )"
    if PRECEDENCE[node[2][0]] <= PRECEDENCE[kind]:
        right = f"( {right} )"
    return f"{left} {kind} {right}"


def _combine(kind: str, left: bool, right: bool) -> bool:
    return (left and right) if kind == "and" else (left or right)


def _evaluate(node: Node, steps: list[str]) -> bool:
    """The node's value; appends one sentence per operation, innermost first."""
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "not":
        value = _evaluate(node[1], steps)
        steps.append(f"not {value} = {not value}.")
        return not value
    left, right = _evaluate(node[1], steps), _evaluate(node[2], steps)
    value = _combine(kind, left, right)
    steps.append(f"{left} {kind} {right} = {value}.")
    return value


def _summary(root: Node, parts: list[bool]) -> str:
    """The intermediate teacher: only the outermost operation, on its parts' values worked out silently."""
    if root[0] == "not":
        value = not parts[0]
        return f"not {parts[0]} = {value}. {closing(str(value))}"
    value = _combine(root[0], *parts)
    return f"{parts[0]} {root[0]} {parts[1]} = {value}. {closing(str(value))}"


def make_boolean_expression(rng: random.Random, hard: bool) -> Problem:
    """Train: three operands; hard: five."""
    leaves = 5 if hard else 3
    root = _tree(rng, leaves)
    while root[0] == "not" and root[1][0] == "not":  # a bare "not not" on top says nothing new
        root = root[1][1]
    steps: list[str] = []
    value = _evaluate(root, steps)
    parts = [_evaluate(child, []) for child in root[1:]]
    # The slip: misjudging one part (or both, when one alone would not change the answer).
    if root[0] == "not":
        flips = [0]
    else:
        singles = [[0], [1]]
        rng.shuffle(singles)
        flips = next((c for c in singles if _combine(root[0], *_flipped(parts, c)) != value), [0, 1])
    return Problem(
        question=f"{_text(root)} is",
        target=str(value),
        strong=" ".join([*steps, closing(str(value))]),
        intermediate=_summary(root, parts),
        flawed=_summary(root, _flipped(parts, flips)),
        size=leaves,
    )


def _flipped(parts: list[bool], which: list[int]) -> list[bool]:
    return [not p if i in which else p for i, p in enumerate(parts)]


BOOLEAN_EXPRESSIONS = Family(
    "boolean_expressions",
    make_boolean_expression,
    "flan",
    '"True" or "False"',
    ("3 operands", "5 operands"),
    "boolean_expressions",
)
