"""Mini-Orca: a synthetic explanation-tuning data set with a programmatic teacher.

The teacher answers multi-digit additions the way Orca's teachers answer FLAN queries under a
"think step by step" system message: it shows its work, column by column with the carries, and ends
with `So the answer is X.`:

    What is 677 + 996?
    7+6=13, write 3 carry 1. 7+9+1=17, write 7 carry 1. 6+9+1=16, write 6 carry 1.
    Write the last carry 1. So the answer is 1673.

Files written by `write_mini_orca(out_dir, ...)`, OpenOrca's columns:
    train.jsonl            the training split
    heldout.jsonl          questions never seen in training, with the teacher's responses
    heldout_bbh.json       the held-out questions in BIG-Bench-Hard's format, for exact-match eval:
                           {"examples": [{"input": "What is 677 + 996?", "target": "1673"}, ...]}
Everything is a function of `seed`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence

from orca_jax.data.records import OrcaRecord, write_jsonl

# Orca-style system messages in this project's wording, the empty one included (Orca evaluates
# zero-shot with an empty system message, so the student must also answer without one).
SYSTEM_MESSAGES = (
    "",
    "You are a helpful assistant. Think step by step and justify each step.",
    "Solve the task faithfully. Show your work one step at a time.",
    "Explain your answer so that a five-year-old could follow it.",
)


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


def _operand_pairs(rng: random.Random, count: int, digits: int, exclude: set[tuple[int, int]]) -> list[tuple[int, int]]:
    low, high = 10 ** (digits - 1), 10**digits - 1
    if (high - low + 1) ** 2 < count + len(exclude):
        raise ValueError(f"only {(high - low + 1) ** 2} distinct {digits}-digit pairs; asked for {count}")
    pairs: list[tuple[int, int]] = []
    seen = set(exclude)
    while len(pairs) < count:
        pair = (rng.randint(low, high), rng.randint(low, high))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def make_records(pairs: Sequence[tuple[int, int]], rng: random.Random, split: str) -> list[OrcaRecord]:
    return [
        OrcaRecord(
            id=f"mini_orca.addition.{split}.{i}",
            system_prompt=rng.choice(SYSTEM_MESSAGES),
            question=addition_question(a, b),
            response=explain_addition(a, b),
        )
        for i, (a, b) in enumerate(pairs)
    ]


def write_mini_orca(out_dir: str, *, num_train: int, num_heldout: int, digits: int, seed: int) -> dict[str, str]:
    """Writes the three files into `out_dir` (which must not hold them yet) and returns their paths."""
    rng = random.Random(seed)
    heldout_pairs = _operand_pairs(rng, num_heldout, digits, exclude=set())
    train_pairs = _operand_pairs(rng, num_train, digits, exclude=set(heldout_pairs))
    paths = {
        "train": os.path.join(out_dir, "train.jsonl"),
        "heldout": os.path.join(out_dir, "heldout.jsonl"),
        "heldout_bbh": os.path.join(out_dir, "heldout_bbh.json"),
    }
    os.makedirs(out_dir, exist_ok=True)
    write_jsonl(paths["train"], make_records(train_pairs, rng, "train"))
    write_jsonl(paths["heldout"], make_records(heldout_pairs, rng, "heldout"))
    bbh = {"examples": [{"input": addition_question(a, b), "target": str(a + b)} for a, b in heldout_pairs]}
    with open(paths["heldout_bbh"], "w", encoding="utf-8") as f:
        json.dump(bbh, f, indent=1)
    return paths
