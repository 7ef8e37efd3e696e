"""What every mini-Orca family shares: a generated problem with its three teachers' responses, the
family registry, and the Orca-style system messages each family draws from."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from orca_jax.data import system_messages

# Orca's sixteen behaviours (system_messages.BEHAVIOURS) in a short wording of our own: the long
# ones alone would fill the mini model's rows, and the synthetic teachers answer every message alike.
SHORT_BEHAVIOURS = {
    1: "",
    2: "Give a detailed answer the user can follow.",
    3: "You will be given a task. Answer in detail.",
    4: "Always explain, as if to a five year old.",
    5: "Follow the instructions extremely well.",
    6: "Help find information. Answer in detail.",
    7: "Do the task faithfully. Justify each step.",
    8: "Explain the task and why the answer is right.",
    9: "Explain how the task's definition gives it.",
    10: "Say why the answer is right and the rest wrong.",
    11: "Answer faithfully. Think step by step.",
    12: "Follow the task's instructions step by step.",
    13: "As a teacher, explain the task in simple steps.",
    14: "Explain the task's guidelines, then solve it.",
    15: "Break the task into parts and solve each part.",
    16: "You help people find information.",
}
SYSTEM_MESSAGES = tuple(dict.fromkeys(SHORT_BEHAVIOURS.values()))

# Every question, in training and in the harder held-out sets, fits one row of the study's runs
# (configs/runs/mini_orca_explain.gin) with the strong teacher's whole response, the longest system
# message, the Orca template, BOS and EOS, in the tokens of the data set's own tokenizer; the writer
# checks it. A harder question then asks for more steps of the same method, never for generating
# past the length the student was trained on.
ROW_TOKENS = 256


def closing(answer: str) -> str:
    """The sentence every response ends with; the evaluator reads the answer after "the answer is"."""
    return f"So the answer is {answer}."


@dataclasses.dataclass(frozen=True)
class Problem:
    question: str
    target: str  # the exact answer string (a BIG-Bench-Hard target)
    strong: str  # GPT-4-like: every step, ending in closing(target)
    intermediate: str  # ChatGPT-like: skips steps, right, ending in closing(target)
    flawed: str  # ChatGPT-like with one plausible slip carried to a different answer, closing(wrong)
    size: int  # what makes it harder: digits, values or swaps

    @property
    def answer_only(self) -> str:
        # The closing phrase stays so that all three students are parsed alike and differ only in
        # the explanation before it.
        return closing(self.target)


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    make: Callable[[random.Random, bool], Problem]  # (rng, hard) -> one problem
    collection: str  # the Orca sub-collection whose system messages it draws from
    answer_form: str  # what a target looks like, for the manifest
    sizes: tuple[str, str]  # in-distribution and hard, in words, for the manifest
    mirrors: str = ""  # the BIG-Bench-Hard task it imitates, and how it differs

    def behaviours(self, question: str) -> list[int]:
        """Its collection's behaviours (8 and 10 only for multiple choice), plus the empty message,
        which every family needs because the evaluation asks with an empty message."""
        choice = system_messages.is_multiple_choice(question)
        allowed = [b for b in system_messages.COLLECTIONS[self.collection]
                   if choice or b not in system_messages.MULTIPLE_CHOICE_ONLY]  # fmt: skip
        return sorted({1, *allowed})

    def system_message(self, record_id: str, question: str, seed: int) -> str:
        """Drawn from the record's id (stable across the three teachers' files)."""
        choices = self.behaviours(question)
        return SHORT_BEHAVIOURS[choices[system_messages.stable_index(record_id, len(choices), seed)]]


def options_block(options: list[str]) -> str:
    """BIG-Bench-Hard's multiple-choice layout: "Options:" then one "(A) ..." line per option."""
    return "Options:\n" + "\n".join(f"({letter(i)}) {o}" for i, o in enumerate(options))


def letter(index: int) -> str:
    return "ABCDEFGHIJKLMNOPQR"[index]
