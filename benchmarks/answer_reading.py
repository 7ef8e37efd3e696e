"""How often the answer reader (orca_jax/evaluation/answers.py) reads a right answer as right, and a
wrong one as wrong, on the real BIG-Bench Hard and AGIEval examples.

For every example it writes the replies a model that knows the answer writes, in the common ways
(`replies`): "Let's think step by step. ... So the answer is (B).", "The answer is (B).", the
answer alone, an option letter in each layout ("(B)", "B", "B)", "B.", "(B) <text>", the option's
text alone, "Option (B) is correct because ..."), numbers as digits and as words for small counts,
and for AGIEval the continuation of its reply prefix ("Among A through E, the answer is" + " (B).").
Each reply is read as orca-eval reads a generation: `answers.extract(reply, ex.form, options)`, then
`answers.is_correct(answer, ex.target, ex.form)`. The same templates, filled with a wrong option,
number or text (`wrong_answer`), must not read as correct.

    .venv/bin/python benchmarks/answer_reading.py --bbh BIG-Bench-Hard/bbh --agieval AGIEval/data/v1
    .venv/bin/python benchmarks/answer_reading.py --bbh ... --agieval ... --write-fixture tests/golden/X.json.gz

`--write-fixture` writes the compact copy of the real targets that tests/test_real_targets.py reads
(`examples_from_fixture` turns it back into the benchmark files, read by the real readers).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

from orca_jax.evaluation import answers, suites
from orca_jax.evaluation.suites import Example

WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
REASONS = {  # one sentence of reasoning; `{other}` is an option the reasoning rules out
    "choice": "Option ({other}) does not fit what the question says, so we look at the others",
    "letter": "Option ({other}) does not fit the passage, so we look at the others",
    "number": "We take the numbers in the question one at a time and combine them",
    "free": "We go through the input one piece at a time and write down the result",
    "yes_no": "We check each statement in the question against the facts given",
}
FIXTURE_ABOUT = (
    "Targets and option texts of every example of the 27 BIG-Bench Hard tasks (github.com/suzgunmirac/"
    "BIG-Bench-Hard, bbh/, MIT licence, commit {bbh_commit}) and the 8 English AGIEval tasks (github.com/"
    "ruixiangcui/AGIEval, data/v1/, MIT licence, its aqua-rat from AQuA under Apache 2.0, commit "
    "{agieval_commit}), without passages and questions; see tests/golden/real_targets.md. Written by "
    "`benchmarks/answer_reading.py --bbh BIG-Bench-Hard/bbh --agieval AGIEval/data/v1 --write-fixture PATH`."
)


# ---- the answer as a person writes it ------------------------------------------------------------


def true_answer(ex: Example) -> str:
    """The example's answer as written in a reply: an option letter, a number, a word or the text."""
    return ex.target.strip().strip("()") if ex.form in ("choice", "letter") else ex.target.strip()


def wrong_answer(ex: Example, rng: random.Random) -> str:
    """A wrong answer of the example's kind: another option, another number, the other word, other text."""
    right = true_answer(ex)
    if ex.form in ("choice", "letter"):
        others = [letter for letter, _ in ex.options if letter != right]
        return rng.choice(others or [chr(ord(right) + 1)])  # one snarks example has a single option
    if ex.form == "number":
        return str(int(right) + rng.choice([-2, -1, 1, 2, 10]))
    if ex.form in ("yes_no", "true_false", "valid_invalid"):
        a, b = {"yes_no": ("yes", "no"), "true_false": ("true", "false"), "valid_invalid": ("valid", "invalid")}[
            ex.form
        ]
        other = b if right.lower() == a else a
        return other.capitalize() if right[:1].isupper() else other
    words = right.split()
    if ex.task == "bbh/dyck_languages":  # one closing bracket of another kind
        swap = {")": "]", "]": "}", "}": ">", ">": ")"}
        return " ".join([*words[:-1], swap[words[-1]]])
    if len(words) > 1 and len(set(words)) > 1:  # the same words, out of order
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        return " ".join(shuffled)
    return right + "s"


def as_target(ex: Example, answer: str) -> str:
    """`answer` written as the example's targets are ("B" -> "(B)" for a BBH choice task)."""
    return f"({answer})" if ex.form == "choice" else answer


def replies(ex: Example, answer: str) -> list[tuple[str, str]]:
    """(style, reply) pairs stating `answer` (as `true_answer` or `wrong_answer` gives it) in the
    common ways for the example's task; for AGIEval, what follows the prompt's reply prefix."""
    form, options = ex.form, dict(ex.options)
    if form == "letter":
        return _agieval_replies(answer, options)
    if form == "choice":
        return _choice_replies(answer, options)
    if form == "number":
        return _number_replies(ex, answer)
    step = f"Let's think step by step. {REASONS['free' if form == 'free' else 'yes_no']}."
    out = [("cot", f"{step} So the answer is {answer}."), ("the answer is", f"The answer is {answer}.")]
    out += [("alone", answer)]
    if form == "free":
        if ex.task == "bbh/word_sorting":
            listed = ", ".join(answer.split())
            out += [("one per line", "\n".join(answer.split())), ("commas", listed)]
            out += [("commas after so the answer is", f"{step} So the answer is {listed}.")]
        return out
    out += [("alone with period", f"{answer}.")]
    if form == "yes_no":
        out += [("first word", f"{answer.capitalize()}, from what the question says.")]
    if form == "valid_invalid":
        out += [("sentence", f"The argument is deductively {answer}.")]
    return out


def _other(letter: str, options: dict[str, str]) -> str:
    return next((x for x in options if x != letter), chr(ord(letter) + 1))


def _text_alone_is_clear(letter: str, options: dict[str, str]) -> bool:
    """Whether a person reading only this option's text knows which option it is: no other option has
    the same text, and the text is not itself an option letter ("C", "(B)G", "A.")."""

    def plain(text: str) -> str:
        return " ".join(text.split()).strip(" .").lower()

    text = options.get(letter, "")
    same = [x for x, body in options.items() if plain(body) == plain(text)]
    looks_lettered = re.match(r"\s*(?:\(([A-R])\)|([A-R])(?:[.):,;]|\s*$))", text)
    return same == [letter] and not (looks_lettered and (looks_lettered[1] or looks_lettered[2]) in options)


def _choice_replies(letter: str, options: dict[str, str]) -> list[tuple[str, str]]:
    text = options.get(letter, "")
    step = f"Let's think step by step. {REASONS['choice'].format(other=_other(letter, options))}."
    out = [
        ("cot", f"{step} So the answer is ({letter})."),
        ("the answer is", f"The answer is ({letter})."),
        ("(B)", f"({letter})"),
        ("B", letter),
        ("B)", f"{letter})"),
        ("B.", f"{letter}."),
        ("(B) text", f"({letter}) {text}"),
        ("so the answer is (B) text", f"{step} So the answer is ({letter}) {text}."),
        ("the answer is B", f"The answer is {letter}."),
        ("answer: (B)", f"Answer: ({letter})"),
        ("option is correct", f"Option ({letter}) is correct because it agrees with everything the question says."),
    ]
    if _text_alone_is_clear(letter, options):
        out += [("text", text), ("so the answer is text", f"So the answer is {text}.")]
    return out


def _agieval_replies(letter: str, options: dict[str, str]) -> list[tuple[str, str]]:
    text = options.get(letter, "")
    step = f"Let's think step by step. {REASONS['letter'].format(other=_other(letter, options))}."
    out = [
        (" (B).", f" ({letter})."),
        (" (B)", f" ({letter})"),
        (" B", f" {letter}"),
        (" B.", f" {letter}."),
        (" B)", f" {letter})"),
        (" B. text", f" {letter}. {text}"),
        (" (B) text", f" ({letter}) {text}"),
        (" B) because", f" {letter}) because it is the only one that fits the passage."),
        (" cot", f" not obvious at first. {step} So the answer is ({letter})."),
        (" option is correct", f" Option ({letter}) is correct because it fits the passage."),
    ]
    if _text_alone_is_clear(letter, options):
        out += [(" text.", f" {text.rstrip('.')}.")]
    return out


def _number_replies(ex: Example, number: str) -> list[tuple[str, str]]:
    step = f"Let's think step by step. {REASONS['number']}."
    out = [("cot", f"{step} So the answer is {number}."), ("the answer is", f"The answer is {number}.")]
    out += [("alone", number)]
    value = int(number)
    if abs(value) >= 1000:
        out += [("thousands separator", f"So the answer is {value:,}.")]
    asked = re.search(r"How many (.+?) do I have\?", ex.input)
    if asked:  # object_counting: "How many vegetables do I have?"
        out += [("you have", f"You have {number} {asked.group(1)}.")]
        if 0 <= value < len(WORDS):
            out += [("you have, in words", f"You have {WORDS[value]} {asked.group(1)}.")]
            out += [("in words", f"So the answer is {WORDS[value]}.")]
    return out


# ---- measuring -----------------------------------------------------------------------------------


def measure(examples: list[Example], max_misses: int = 50, wrong_every: int = 1, seed: int = 0) -> dict:
    """Per task: examples, replies built, replies read correctly; the same for wrong answers stated in
    the same ways (every `wrong_every`-th example), and the misses of both kinds (up to `max_misses`)."""
    rng = random.Random(seed)
    counts = ("examples", "replies", "read_correctly", "wrong_replies", "wrong_read_as_correct")
    tasks: dict[str, dict] = defaultdict(lambda: dict.fromkeys(counts, 0))
    wrong = {"replies": 0, "read_as_correct": 0, "read_as_stated": 0}
    misses, false_credit, by_style, styles = [], [], defaultdict(int), defaultdict(int)
    for i, ex in enumerate(examples):
        row = tasks[ex.task]
        row["examples"] += 1
        options = dict(ex.options)
        for style, reply in replies(ex, true_answer(ex)):
            answer = answers.extract(reply, ex.form, options)
            row["replies"] += 1
            styles[style] += 1
            if answers.is_correct(answer, ex.target, ex.form):
                row["read_correctly"] += 1
                continue
            by_style[f"{ex.task} {style!r}"] += 1
            if len(misses) < max_misses:
                misses.append({"task": ex.task, "style": style, "reply": reply, "target": ex.target, "read": answer})
        if i % wrong_every:
            continue
        stated = wrong_answer(ex, rng)
        for style, reply in replies(ex, stated):
            wrong["replies"] += 1
            row["wrong_replies"] += 1
            answer = answers.extract(reply, ex.form, options)
            wrong["read_as_stated"] += answers.is_correct(answer, as_target(ex, stated), ex.form)
            if answers.is_correct(answer, ex.target, ex.form):
                wrong["read_as_correct"] += 1
                row["wrong_read_as_correct"] += 1
                if len(false_credit) < max_misses:
                    false_credit.append({"task": ex.task, "style": style, "reply": reply, "target": ex.target})
    built = sum(r["replies"] for r in tasks.values())
    right = sum(r["read_correctly"] for r in tasks.values())
    for row in tasks.values():
        row["rate"] = round(row["read_correctly"] / row["replies"], 5)
    return {
        "examples": sum(r["examples"] for r in tasks.values()),
        "replies": built,
        "read_correctly": right,
        "rate": round(right / built, 5),
        "misses_by_task": {
            t: r["replies"] - r["read_correctly"] for t, r in tasks.items() if r["replies"] > r["read_correctly"]
        },
        "misses_by_style": dict(sorted(by_style.items(), key=lambda kv: -kv[1])),
        "replies_by_style": dict(styles),
        "wrong_answer_replies": wrong["replies"],
        "wrong_read_as_correct": wrong["read_as_correct"],
        "wrong_read_as_wrong_rate": round(1 - wrong["read_as_correct"] / max(wrong["replies"], 1), 5),
        "wrong_read_as_stated_rate": round(wrong["read_as_stated"] / max(wrong["replies"], 1), 5),
        "tasks": dict(tasks),
        "misses": misses,
        "wrong_read_as_correct_examples": false_credit,
    }


# ---- the fixture: the real targets and options, without passages and questions ---------------------

OPTIONS_HEADER = "\nOptions:\n"


def build_fixture(bbh_dir: str, agieval_dir: str, about: str) -> dict:
    bbh: dict[str, list] = {}
    for task in suites.BBH_TASKS:
        with open(os.path.join(bbh_dir, task + ".json"), encoding="utf-8") as f:
            rows = []
            for ex in json.load(f)["examples"]:
                row = {"target": ex["target"]}
                if OPTIONS_HEADER in ex["input"]:
                    row["options"] = ex["input"].split(OPTIONS_HEADER, 1)[1]
                elif asked := re.search(r"How many .+? do I have\?$", ex["input"]):
                    row["question"] = asked.group(0)
                rows.append(row)
            bbh[task] = rows
    agieval: dict[str, list | str] = {}
    for task in suites.AGIEVAL_TASKS:
        with open(os.path.join(agieval_dir, task + ".jsonl"), encoding="utf-8") as f:
            rows = [{"options": o["options"], "label": o["label"]} for o in map(json.loads, filter(str.strip, f))]
        # sat-en-without-passage has sat-en's options and labels: stored once, named the second time
        agieval[task] = next((name for name, earlier in agieval.items() if earlier == rows), rows)
    return {"about": about, "bbh": bbh, "agieval": agieval}


def examples_from_fixture(fixture: dict, folder: str) -> list[Example]:
    """The fixture written back as benchmark files under `folder` (a stub question per example), then
    read by the real readers, as orca-eval reads a clone."""
    os.makedirs(os.path.join(folder, "bbh"), exist_ok=True)
    os.makedirs(os.path.join(folder, "agieval"), exist_ok=True)
    for task, rows in fixture["bbh"].items():
        examples = []
        for i, row in enumerate(rows):
            text = row.get("question", f"Question {i} of {task}.")
            if "options" in row:
                text += OPTIONS_HEADER + row["options"]
            examples.append({"input": text, "target": row["target"]})
        with open(os.path.join(folder, "bbh", task + ".json"), "w") as f:
            json.dump({"examples": examples}, f)
    for task, rows in fixture["agieval"].items():
        rows = fixture["agieval"][rows] if isinstance(rows, str) else rows
        with open(os.path.join(folder, "agieval", task + ".jsonl"), "w") as f:
            for i, row in enumerate(rows):
                f.write(json.dumps({"passage": None, "question": f"Question {i}.", **row}) + "\n")
    return suites.read_bbh(os.path.join(folder, "bbh")) + suites.read_agieval(os.path.join(folder, "agieval"))


def _key(ex: Example) -> tuple:
    return ex.task, ex.target, ex.form, ex.options, ex.reply_prefix


def write_fixture(path: str, bbh_dir: str, agieval_dir: str, real: list[Example]) -> int:
    about = FIXTURE_ABOUT.format(bbh_commit=_commit(bbh_dir), agieval_commit=_commit(agieval_dir))
    fixture = build_fixture(bbh_dir, agieval_dir, about)
    with tempfile.TemporaryDirectory() as folder:
        rebuilt = examples_from_fixture(fixture, folder)
    if [_key(e) for e in rebuilt] != [_key(e) for e in real]:
        raise SystemExit("the fixture does not read back as the real files do")
    data = json.dumps(fixture, ensure_ascii=False, separators=(",", ":")).encode()
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:
        f.write(data)
    return os.path.getsize(path)


def _commit(folder: str) -> str:
    """The checked-out commit of the clone holding `folder`."""
    done = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bbh", required=True, help="a BIG-Bench-Hard clone's bbh/ folder")
    parser.add_argument("--agieval", required=True, help="an AGIEval clone's data/v1/ folder")
    parser.add_argument("--max_misses", type=int, default=50)
    parser.add_argument("--write-fixture", dest="fixture", help="write the compact copy of the targets here")
    args = parser.parse_args(argv)
    real = suites.read_bbh(args.bbh) + suites.read_agieval(args.agieval)
    if args.fixture:
        size = write_fixture(args.fixture, args.bbh, args.agieval, real)
        print(json.dumps({"fixture": args.fixture, "bytes": size, "examples": len(real)}))
        return 0
    print(json.dumps(measure(real, max_misses=args.max_misses), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
