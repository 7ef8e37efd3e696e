"""Two logic families of BIG-Bench-Hard.

boolean_expressions: `not ( True and False ) or True is`, target "True" or "False" (Python's
precedence: not > and > or). The strong teacher rewrites the expression one operation at a time,
innermost and leftmost first, restating the rest, until one value is left:

    not ( True and False ) or True = not False or True = True or True = True. So the answer is True.

web_of_lies: who tells the truth along a chain of claims, target "Yes" or "No". Each sentence of
the strong teacher restates one claim and the speaker's value, which follows from the claim and the
value just before it (the parity that an answer alone must guess):

    Question: Ann lies. Bob says Ann tells the truth. Cal says Bob lies. Does Cal tell the truth?
    Ann lies. Bob says Ann tells the truth, so Bob lies. Cal says Bob lies, so Cal tells the truth.
    So the answer is Yes.
"""

from __future__ import annotations

import random

from orca_jax.datagen.mini_orca.base import Family, Problem, closing

# Boolean expressions. A node is ("lit", value), ("not", child), or ("and" | "or", left, right).
Node = tuple
PRECEDENCE = {"or": 1, "and": 2, "not": 3, "lit": 4}
NOT_RATE = 0.25  # each node is negated with this chance
MAX_WORDS = 120  # words (each one token) of the rewrites and their "=" signs


def _tree(rng: random.Random, leaves: int) -> Node:
    if leaves == 1:
        node: Node = ("lit", rng.random() < 0.5)
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
    # A same-precedence right operand keeps its brackets, so reading the text left to right and the
    # order of the rewrites agree.
    if PRECEDENCE[node[1][0]] < PRECEDENCE[kind]:
        left = f"( {left} )"
    if PRECEDENCE[node[2][0]] <= PRECEDENCE[kind]:
        right = f"( {right} )"
    return f"{left} {kind} {right}"


def _value(node: Node) -> bool:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "not":
        return not _value(node[1])
    return (_value(node[1]) and _value(node[2])) if kind == "and" else (_value(node[1]) or _value(node[2]))


def _reduce(node: Node, wrong: bool = False) -> Node:
    """`node` with its first operation whose operands are all values (innermost, leftmost) replaced
    by its value (the opposite value when `wrong`)."""
    if all(child[0] == "lit" for child in node[1:]):
        return ("lit", _value(node) != wrong)
    for i, child in enumerate(node[1:], start=1):
        if child[0] != "lit":
            return (*node[:i], _reduce(child, wrong), *node[i + 1 :])
    raise AssertionError(node)


def _rewrites(root: Node, every: int = 1, slip: int = -1) -> list[str]:
    """The expression after each rewrite, showing one in `every` of them; rewrite `slip` is wrong."""
    shown, node, done = [], root, 0
    while node[0] != "lit":
        node, done = _reduce(node, wrong=done == slip), done + 1
        if done % every == 0 or node[0] == "lit":
            shown.append(_text(node))
    return shown


def make_boolean_expression(rng: random.Random, hard: bool) -> Problem:
    """Train: 2 to 5 values; hard: 5. Expressions whose rewrites would run past MAX_WORDS words (the
    deepest nests of "not", under 2% of draws) are drawn again, so every one fits a row."""
    leaves = 5 if hard else rng.randint(2, 5)
    while True:
        root = _tree(rng, leaves)
        while root[0] == "not" and root[1][0] == "not":  # a bare "not not" on top says nothing new
            root = root[1][1]
        if root[0] == "lit":
            root = ("not", root)
        steps = _rewrites(root)
        if len(" ".join([_text(root), *steps]).split()) + 2 * len(steps) <= MAX_WORDS:
            break
    value = str(_value(root))
    # The slip: one rewrite's value flipped, among those that change the answer (the last always does).
    slips = [i for i in range(len(steps)) if _rewrites(root, slip=i)[-1] != steps[-1]]
    wrong = _rewrites(root, every=2, slip=rng.choice(slips))
    return Problem(
        question=f"{_text(root)} is",
        target=value,
        strong=f"{_text(root)} = {' = '.join(steps)}. {closing(value)}",
        intermediate=f"{_text(root)} = {' = '.join(_rewrites(root, every=2))}. {closing(value)}",
        flawed=f"{_text(root)} = {' = '.join(wrong)}. {closing(wrong[-1])}",
        size=leaves,
    )


BOOLEAN_EXPRESSIONS = Family(
    "boolean_expressions", make_boolean_expression, "flan", '"True" or "False"', ("2-5 values", "5 values"),
    "boolean_expressions (which has 4 or 5 values)",
)  # fmt: skip


# Web of lies.
NAMES = ("Ann", "Bob", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou", "Max", "Ned")


def _says(truth: bool) -> str:
    return "tells the truth" if truth else "lies"


def _chain(first: bool, claims: list[bool], slip: int = -1) -> list[bool]:
    """Each speaker's value: a speaker tells the truth when their claim about the one before is right.
    At `slip` the claim is misread (the intermediate teacher's slip)."""
    values = [first]
    for i, claim in enumerate(claims):
        values.append((claim == values[-1]) != (i == slip))
    return values


def make_web_of_lies(rng: random.Random, hard: bool) -> Problem:
    """Train: 3 to 5 people; hard: 5 (BIG-Bench-Hard's size)."""
    n = 5 if hard else rng.randint(3, 5)
    names = rng.sample(NAMES, n)
    first, claims = rng.random() < 0.5, [rng.random() < 0.5 for _ in range(n - 1)]
    values = _chain(first, claims)
    said = [f"{names[i + 1]} says {names[i]} {_says(c)}" for i, c in enumerate(claims)]
    question = (f"Question: {names[0]} {_says(first)}. " + " ".join(s + "." for s in said)
                + f" Does {names[-1]} tell the truth?")  # fmt: skip
    target = "Yes" if values[-1] else "No"
    steps = [f"{names[0]} {_says(first)}."]
    steps += [f"{s}, so {name} {_says(v)}." for s, name, v in zip(said, names[1:], values[1:], strict=True)]

    def intermediate(values: list[bool]) -> str:
        answer = "Yes" if values[-1] else "No"
        trail = ", ".join(f"{name} {_says(v)}" for name, v in zip(names, values, strict=True))
        return f"{trail}. {closing(answer)}"

    return Problem(
        question=question,
        target=target,
        strong=" ".join([*steps, closing(target)]),
        intermediate=intermediate(values),
        flawed=intermediate(_chain(first, claims, slip=rng.randrange(n - 1))),
        size=n,
    )


WEB_OF_LIES = Family(
    "web_of_lies", make_web_of_lies, "flan", '"Yes" or "No"', ("3 to 5 people", "5 people"),
    "web_of_lies (which has 5 people), with short names",
)  # fmt: skip
