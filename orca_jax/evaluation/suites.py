"""Benchmark readers, from local folders in the benchmarks' own layouts.

    BIG-Bench Hard   a clone of the BBH repository's `bbh/` folder: `<task>.json` =
                     {"canary": ..., "examples": [{"input": ..., "target": ...}, ...]}
                     e.g. input "Today is 9/7. Jane is watching NFL 2003. What is the date...?\\nOptions:\\n
                     (A) 09/08/1960\\n(B) ...", target "(A)".
    AGIEval          a clone of the AGIEval repository's `data/v1/` folder: `<task>.jsonl`, one object per
                     line: passage (string or null), question, options ["(A)...", ...], label "A".
    your own tasks   any folder of BBH-format files (the mini-Orca held-out sets are written so).

Every example becomes an `Example`: the user message the model is asked (zero-shot, as Orca
evaluates), the target, the target's form (answers.py), the options when there are any, and the
start of the reply that the prompt already supplies (AGIEval's "Among A through E, the answer is").
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import tensorflow as tf

from orca_jax.errors import DataError
from orca_jax.evaluation import answers

BBH_TASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
)  # fmt: skip
# Orca reports the 23 multiple-choice and short-answer tasks: all but these four.
BBH_NOT_IN_ORCA = ("dyck_languages", "multistep_arithmetic_two", "object_counting", "word_sorting")
AGIEVAL_TASKS = (
    "aqua-rat", "logiqa-en", "lsat-ar", "lsat-lr", "lsat-rc", "sat-math", "sat-en", "sat-en-without-passage",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Example:
    task: str  # "<suite>/<task>", e.g. "bbh/navigate"
    input: str  # the user message
    target: str
    form: str  # see answers.py
    options: tuple[tuple[str, str], ...] = ()  # (letter, text) for multiple-choice tasks
    reply_prefix: str = ""  # the start of the reply, part of the prompt

    @property
    def suite(self) -> str:
        return self.task.split("/", 1)[0]


def read_bbh_file(path: str, suite: str = "bbh") -> list[Example]:
    """The examples of one BBH-format file; the task is named after the file."""
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        with tf.io.gfile.GFile(path) as f:
            data = json.loads(f.read())
    except (OSError, tf.errors.OpError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise DataError(f'{path}: expected an object with an "examples" list (BIG-Bench-Hard format)')
    raw = data["examples"]
    for i, ex in enumerate(raw):
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str) or not isinstance(ex.get("target"), str):
            raise DataError(f'{path}: examples[{i}]: needs string fields "input" and "target"')
    if not raw:
        raise DataError(f"{path}: no examples")
    targets = [ex["target"] for ex in raw]
    form = answers.infer_form(targets)
    # Most targets option letters, a few the option's text (movie_recommendation, ruin_names): a
    # choice task, each exception turned into its option's letter. Where no one option is the target
    # (BIG-Bench-Hard splits "Monsters, Inc" into options "(A) Monsters" and "(B) Inc"), that example
    # is read as free text.
    if form == "free" and 2 * sum(bool(_LETTER_TARGET.fullmatch(t)) for t in targets) > len(targets):
        form = "choice"
    examples = []
    for ex in raw:
        options = answers.options_in(ex["input"]) if form == "choice" else {}
        target, example_form = ex["target"], form
        if form == "choice" and not _LETTER_TARGET.fullmatch(target):
            letter = answers.option_named(target, options)
            target, example_form = (f"({letter})", "choice") if letter else (target, "free")
        options = options if example_form == "choice" else {}
        examples.append(Example(f"{suite}/{name}", ex["input"], target, example_form, tuple(options.items())))
    return examples


_LETTER_TARGET = re.compile(r"\s*\([A-R]\)\s*")


def read_task_folder(folder: str, suite: str, tasks: tuple[str, ...] = ()) -> list[Example]:
    """BBH-format files `<task>.json` in `folder`: the named tasks (each must be there), or all of them."""
    if not tf.io.gfile.isdir(folder):
        raise DataError(f"{folder}: no such folder (the {suite} tasks, one <task>.json each)")
    present = sorted(os.path.splitext(n)[0] for n in tf.io.gfile.listdir(folder) if n.endswith(".json"))
    missing = [t for t in tasks if t not in present]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(t + '.json' for t in missing)} (of the {suite} tasks)")
    if not present:
        raise DataError(f"{folder}: no <task>.json files")
    examples: list[Example] = []
    for task in tasks or present:
        examples += read_bbh_file(os.path.join(folder, task + ".json"), suite)
    return examples


def read_bbh(folder: str, tasks: tuple[str, ...] = BBH_TASKS) -> list[Example]:
    """BIG-Bench Hard from a clone's `bbh/` folder: by default all 27 tasks, each required."""
    return read_task_folder(folder, "bbh", tasks)


def agieval_prompt(passage: str | None, question: str, options: list[str]) -> tuple[str, str]:
    """AGIEval's zero-shot English prompt as (user message, start of the reply): the passage, the
    question and the options, then "Among A through <last option>, the answer is"."""
    last = answers.OPTION_LETTERS[len(options) - 1]
    head = f"{passage.strip()}\n" if passage else ""
    return f"{head}Q: {question.strip()} Answer Choices: {' '.join(o.strip() for o in options)}", (
        f"Among A through {last}, the answer is"
    )


def read_text(path: str) -> str:
    """A local or gs:// file's text; a file that cannot be read is one clear error."""
    try:
        with tf.io.gfile.GFile(path) as f:
            return f.read()
    except (OSError, tf.errors.OpError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None


def read_jsonl(path: str) -> list[tuple[str, dict]]:
    """(`file:line`, object) for every non-empty line of a JSONL file of objects."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object")
        rows.append((where, obj))
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def read_agieval_task(path: str, task: str) -> list[Example]:
    examples = []
    for where, obj in read_jsonl(path):
        options, label, question = obj.get("options"), obj.get("label"), obj.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: question: missing or empty")
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise DataError(f'{where}: options: expected a list of strings like "(A)..."')
        if len(options) > len(answers.OPTION_LETTERS):
            raise DataError(f"{where}: options: {len(options)} of them, more than {len(answers.OPTION_LETTERS)}")
        pairs = tuple(_lettered_option(o, i) for i, o in enumerate(options))
        letters = [letter for letter, _ in pairs]
        if not isinstance(label, str) or label not in letters:
            raise DataError(f"{where}: label: {label!r} is not one of the option letters {letters}")
        passage = obj.get("passage")
        user, reply_prefix = agieval_prompt(passage if isinstance(passage, str) else None, question, options)
        examples.append(Example(f"agieval/{task}", user, label, "letter", pairs, reply_prefix))
    return examples


def read_agieval(folder: str, tasks: tuple[str, ...] = AGIEVAL_TASKS) -> list[Example]:
    """AGIEval from a clone's `data/v1/` folder: by default the 8 English multiple-choice tasks."""
    if not tf.io.gfile.isdir(folder):
        raise DataError(f"{folder}: no such folder (AGIEval's data/v1, one <task>.jsonl each)")
    missing = [t for t in tasks if not tf.io.gfile.exists(os.path.join(folder, t + ".jsonl"))]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(t + '.jsonl' for t in missing)} (of the AGIEval tasks)")
    examples: list[Example] = []
    for task in tasks:
        examples += read_agieval_task(os.path.join(folder, task + ".jsonl"), task)
    return examples


# An option's own letter as AGIEval's files write it: "(A)text", "A. text", "A) text", "A text"
# (logiqa-en), "A? text" (logiqa-en, a full-width mark lost), padded with spaces (gaokao-english).
_OPTION_PREFIX = r"\s*(?:\({0}\)|{0}(?:[^\w\s(]|\s|$))\s*"


def _lettered_option(option: str, position: int) -> tuple[str, str]:
    """(letter, text) of the option at `position`. The letter is the position's ("A" first), as
    AGIEval scores it; the text is the option without that letter, or all of it where the file
    left the letter out (a few logiqa-en options: "When the land in City A.B ...")."""
    letter = answers.OPTION_LETTERS[position]
    match = re.match(_OPTION_PREFIX.format(letter), option)
    return letter, option[match.end() if match else 0 :].strip()
