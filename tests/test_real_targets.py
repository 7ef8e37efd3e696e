"""The answer reader on the real BIG-Bench Hard and AGIEval targets (issue 18, item 4).

tests/golden/real_targets.json.gz holds every example's target and option texts (tests/golden/
real_targets.md says where from). They are written back as benchmark files and read by the real
readers; then benchmarks/answer_reading.py (loaded by path: one reply builder) writes, for every
example, the replies a model that knows the answer writes in the common ways, and the same replies
stating a wrong answer. At least 99.9% of the right ones must read as right, overall and per task,
and wrong ones must not read as right.
"""

import gzip
import importlib.util
import json
import pathlib
import sys
from collections import Counter

import pytest

from orca_jax.evaluation import suites

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE.parent / "benchmarks" / "answer_reading.py"
FIXTURE = HERE / "golden" / "real_targets.json.gz"
BAR = 0.999

# The public files' example counts: BBH 6,511, the 8 English AGIEval tasks 2,546.
BBH_COUNTS = {task: 250 for task in suites.BBH_TASKS} | {
    "causal_judgement": 187,
    "penguins_in_a_table": 146,
    "snarks": 178,
}
AGIEVAL_COUNTS = {
    "aqua-rat": 254,
    "logiqa-en": 651,
    "lsat-ar": 230,
    "lsat-lr": 510,
    "lsat-rc": 269,
    "sat-math": 220,
    "sat-en": 206,
    "sat-en-without-passage": 206,
}
# The ways of writing the answer every example of a form must have been given (issue 18's list).
REQUIRED_STYLES = {
    "choice": {"cot", "the answer is", "(B)", "B", "B)", "B.", "(B) text", "option is correct"},
    "letter": {" (B).", " (B)", " B", " B.", " B)", " B. text", " (B) text", " B) because", " cot"},
    "number": {"cot", "the answer is", "alone"},
    "yes_no": {"cot", "the answer is", "alone"},
    "true_false": {"cot", "the answer is", "alone"},
    "valid_invalid": {"cot", "the answer is", "alone"},
    "free": {"cot", "the answer is", "alone"},
}


@pytest.fixture(scope="module")
def reading():
    spec = importlib.util.spec_from_file_location("answer_reading", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def examples(reading, tmp_path_factory):
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        fixture = json.load(f)
    return reading.examples_from_fixture(fixture, str(tmp_path_factory.mktemp("real_targets")))


@pytest.fixture(scope="module")
def measured(reading, examples):
    return reading.measure(examples, max_misses=20)


def test_all_tasks_are_there_with_their_real_example_counts(examples):
    counts = Counter(ex.task for ex in examples)
    assert counts == Counter({f"bbh/{t}": n for t, n in BBH_COUNTS.items()} | {
        f"agieval/{t}": n for t, n in AGIEVAL_COUNTS.items()
    })  # fmt: skip
    assert sum(n for t, n in counts.items() if t.startswith("bbh/")) == 6511
    assert sum(n for t, n in counts.items() if t.startswith("agieval/")) == 2546
    forms = Counter((ex.task, ex.form) for ex in examples)
    # Three BBH title targets that no single option holds are free text; every other form is the task's own.
    assert forms[("bbh/movie_recommendation", "free")] == 1 and forms[("bbh/ruin_names", "free")] == 2
    assert forms[("bbh/word_sorting", "free")] == 250 and forms[("bbh/object_counting", "number")] == 250
    assert sum(n for (task, form), n in forms.items() if form == "letter") == 2546


def test_every_example_gets_every_common_way_of_answering(reading, examples):
    for ex in examples:
        styles = {style for style, _ in reading.replies(ex, reading.true_answer(ex))}
        missing = REQUIRED_STYLES[ex.form] - styles
        assert not missing, f"{ex.task} ({ex.form}) gets no {sorted(missing)} reply"


def test_right_answers_read_as_right_on_every_task(measured):
    summary = {k: measured[k] for k in ("replies", "read_correctly", "rate", "misses_by_task", "misses")}
    assert measured["rate"] >= BAR, summary
    worst = {task: row["rate"] for task, row in measured["tasks"].items() if row["rate"] < BAR}
    assert not worst, (worst, summary)
    assert measured["replies"] >= 9 * measured["examples"]  # the styles above, not a token few


def test_wrong_answers_do_not_read_as_right(measured):
    summary = {k: measured[k] for k in measured if k.startswith("wrong")}
    assert measured["wrong_answer_replies"] >= 9 * measured["examples"], summary
    assert measured["wrong_read_as_wrong_rate"] >= BAR, summary
    for task, row in measured["tasks"].items():
        assert row["wrong_read_as_correct"] <= (1 - BAR) * row["wrong_replies"], (task, row)
    # ... and read as the wrong answer they state, not merely as nothing.
    assert measured["wrong_read_as_stated_rate"] >= BAR, summary
