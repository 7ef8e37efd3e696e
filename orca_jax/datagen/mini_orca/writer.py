"""Writes a mini-Orca data set: the three teachers' training files, the held-out files, the
BIG-Bench-Hard-format benchmark files and a manifest (the layout is in the package docstring)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence

import sentencepiece as spm

from orca_jax.data.records import OrcaRecord, write_jsonl
from orca_jax.data.templates import get_template
from orca_jax.datagen.mini_orca.arithmetic import ADDITION
from orca_jax.datagen.mini_orca.base import ROW_TOKENS, SYSTEM_MESSAGES, Family, Problem
from orca_jax.datagen.mini_orca.logic import BOOLEAN_EXPRESSIONS, WEB_OF_LIES
from orca_jax.datagen.mini_orca.people import TRACKING_SHUFFLED_OBJECTS
from orca_jax.datagen.mini_orca.tokenizer import VOCAB_SIZE, train_tokenizer
from orca_jax.errors import DataError

FAMILIES: dict[str, Family] = {f.name: f for f in (
    ADDITION, BOOLEAN_EXPRESSIONS, TRACKING_SHUFFLED_OBJECTS, WEB_OF_LIES,
)}  # fmt: skip
DEFAULT_FAMILIES = ("addition", "boolean_expressions", "web_of_lies")
TEACHERS = ("strong", "intermediate", "answer_only")
TEACHER_NOTES = {
    "strong": "GPT-4-like: every step, ending in 'So the answer is X.'",
    "intermediate": "ChatGPT-like: skips steps; wrong (one plausible slip carried to a different final answer) "
    "for exactly round(intermediate_error_rate * num_train) questions of each family",
    "answer_only": "shallow imitation: exactly 'So the answer is X.' (the closing phrase is kept so that every "
    "student is parsed alike and the students differ only in the explanation)",
}


def stream(seed: int, family: str, purpose: str) -> random.Random:
    """An independent random stream per (seed, family, purpose): held-out questions never share draws
    with training ones, and a family's questions do not depend on which other families are asked for."""
    return random.Random(f"mini_orca/{seed}/{family}/{purpose}")


def draw(family: Family, rng: random.Random, count: int, *, hard: bool, exclude: set[str]) -> list[Problem]:
    """`count` problems with distinct questions, none in `exclude` (which grows with them)."""
    problems: list[Problem] = []
    draws = 0
    while len(problems) < count:
        problem = family.make(rng, hard)
        draws += 1
        if problem.question not in exclude:
            exclude.add(problem.question)
            problems.append(problem)
        elif draws > 50 * count + 1000:
            raise ValueError(f"{family.name}: only {len(problems)} distinct questions after {draws} draws; "
                             f"ask for fewer than {count}")  # fmt: skip
    return problems


def check_rows(tokenizer: str, problems: dict[str, list[Problem]]) -> None:
    """Every problem fits a row of ROW_TOKENS with the longest system message (base.ROW_TOKENS)."""
    vocab = spm.SentencePieceProcessor(model_file=tokenizer)
    longest = len(vocab.encode(get_template("orca").prompt(max(SYSTEM_MESSAGES, key=len), "")))
    for name, items in problems.items():
        for p in items:
            tokens = longest + len(vocab.encode(p.question)) + len(vocab.encode(p.strong)) + 2  # BOS, EOS
            if tokens > ROW_TOKENS:
                raise ValueError(f"{name}: a question with its explanation takes {tokens} tokens, over the "
                                 f"{ROW_TOKENS} of a row: {p.question!r}")  # fmt: skip


def write_mini_orca(
    out_dir: str,
    *,
    num_train: int = 10000,
    num_heldout: int = 100,
    num_hard: int | None = None,
    families: Sequence[str] = DEFAULT_FAMILIES,
    intermediate_error_rate: float = 0.2,
    seed: int = 0,
) -> dict[str, str]:
    """Writes the data set into `out_dir` and returns {name: path}. Sizes are per family;
    `num_hard` defaults to `num_heldout`. Everything is a function of the arguments."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown families {unknown}; choose from {sorted(FAMILIES)}")
    if not 0.0 <= intermediate_error_rate <= 1.0:
        raise ValueError(f"intermediate_error_rate must be in [0, 1], got {intermediate_error_rate}")
    num_hard = num_heldout if num_hard is None else num_hard
    families = list(dict.fromkeys(families))
    train: dict[str, list[OrcaRecord]] = {t: [] for t in TEACHERS}
    heldout: list[OrcaRecord] = []
    bbh: dict[str, list[Problem]] = {}
    bbh_hard: dict[str, list[Problem]] = {}
    drawn: dict[str, list[Problem]] = {}  # every problem of each family, for the row check
    report = {}
    for name in families:
        family = FAMILIES[name]
        seen: set[str] = set()
        # Held-out questions first, each from its own stream; training questions then skip them.
        bbh[name] = draw(family, stream(seed, name, "heldout"), num_heldout, hard=False, exclude=seen)
        bbh_hard[name] = draw(family, stream(seed, name, "hard"), num_hard, hard=True, exclude=seen)
        problems = draw(family, stream(seed, name, "train"), num_train, hard=False, exclude=seen)
        drawn[name] = problems + bbh[name] + bbh_hard[name]
        wrong = set(stream(seed, name, "errors").sample(range(num_train), round(intermediate_error_rate * num_train)))
        for i, p in enumerate(problems):
            record_id = f"mini_orca.{name}.train.{i}"
            system = family.system_message(record_id, p.question, seed)
            responses = {"strong": p.strong, "intermediate": p.flawed if i in wrong else p.intermediate,
                         "answer_only": p.answer_only}  # fmt: skip
            for teacher in TEACHERS:
                train[teacher].append(OrcaRecord(record_id, system, p.question, responses[teacher]))
        for i, p in enumerate(bbh[name]):
            record_id = f"mini_orca.{name}.heldout.{i}"
            heldout.append(OrcaRecord(record_id, family.system_message(record_id, p.question, seed), p.question,
                                      p.strong))  # fmt: skip
        report[name] = {
            "mirrors": family.mirrors or "no BIG-Bench-Hard task",
            "answer": family.answer_form,
            "train_size": family.sizes[0],
            "hard_size": family.sizes[1],
            "train": num_train,
            "heldout": num_heldout,
            "hard": num_hard,
            "intermediate_wrong": len(wrong),
            "system_message_behaviours": sorted({b for p in problems for b in family.behaviours(p.question)}),
        }

    # One shuffle for all three files: the same questions and ids in the same order in each, and no
    # long runs of one family for a finite shuffle buffer to mix.
    order = list(range(len(train["strong"])))
    stream(seed, "all", "order").shuffle(order)
    paths = {f"train_{t}": os.path.join(out_dir, f"train_{t}.jsonl") for t in TEACHERS}
    paths["heldout"] = os.path.join(out_dir, "heldout.jsonl")
    for folder in ("bbh", "bbh_hard"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
        for name in set(FAMILIES) - set(families):  # an earlier generation's: an evaluation would read it
            stale = os.path.join(out_dir, folder, f"{name}.json")
            if os.path.exists(stale):
                os.remove(stale)
    for teacher in TEACHERS:
        write_jsonl(paths[f"train_{teacher}"], [train[teacher][i] for i in order])
    write_jsonl(paths["heldout"], heldout)
    for folder, sets in (("bbh", bbh), ("bbh_hard", bbh_hard)):
        for name, problems in sets.items():
            paths[f"{folder}/{name}"] = path = os.path.join(out_dir, folder, f"{name}.json")
            examples = [{"input": p.question, "target": p.target} for p in problems]
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"examples": examples}, f, indent=1, ensure_ascii=False)
    # The student's vocabulary, fitted to what the runs tokenize: prompts in the Orca template, and
    # every teacher's responses, as the training pipeline tokenizes them (apart).
    paths["tokenizer"] = os.path.join(out_dir, "tokenizer.model")
    orca = get_template("orca")
    texts = [text for teacher in TEACHERS for r in train[teacher]
             for text in (orca.prompt(r.system_prompt, r.question), r.response)]  # fmt: skip
    train_tokenizer(texts, paths["tokenizer"])
    check_rows(paths["tokenizer"], drawn)
    paths["manifest"] = os.path.join(out_dir, "manifest.json")
    manifest = {
        "generator": "orca-data generate-mini (orca_jax.datagen.mini_orca)",
        "flags": {
            "seed": seed,
            "families": families,
            "num_train": num_train,
            "num_heldout": num_heldout,
            "num_hard": num_hard,
            "intermediate_error_rate": intermediate_error_rate,
        },  # fmt: skip
        "sizes_are": "per family",
        "teachers": TEACHER_NOTES,
        "tokenizer": f"SentencePiece BPE, at most {VOCAB_SIZE} pieces, fitted to the prompts and responses of the "
        "three training files (orca_jax/datagen/mini_orca/tokenizer.py)",
        "files": {k: os.path.relpath(v, out_dir) for k, v in paths.items()},
        "families": report,
    }
    with open(paths["manifest"], "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return paths


def generate_mini(out: str, *, num_train: int = 10000, num_heldout: int = 100, num_hard: int | None = None,
                  families: str = "", intermediate_error_rate: float = 0.2, seed: int = 0, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> dict[str, str]:  # fmt: skip
    """`orca-data generate-mini`: checks `out`, writes the data set (families comma-separated, empty
    for the default three) and logs where each part went. Returns {name: path}."""
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise DataError(f"{out}: folder is not empty; choose another --out or pass --overwrite")
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"{out}: exists and is not a folder")
    chosen = [f.strip() for f in families.split(",") if f.strip()] or list(DEFAULT_FAMILIES)
    try:
        paths = write_mini_orca(out, num_train=num_train, num_heldout=num_heldout, num_hard=num_hard, families=chosen,
                                intermediate_error_rate=intermediate_error_rate, seed=seed)  # fmt: skip
    except ValueError as e:
        raise DataError(str(e)) from None
    hard = num_heldout if num_hard is None else num_hard
    log(f"mini-Orca, {len(chosen)} families x ({num_train} train, {num_heldout} held-out, {hard} hard), "
        f"intermediate teacher wrong on {intermediate_error_rate:.0%}, seed {seed}:")  # fmt: skip
    for name in ("train_strong", "train_intermediate", "train_answer_only", "heldout", "tokenizer", "manifest"):
        log(f"  {name:<18} {paths[name]}")
    log(f"  {'bbh, bbh_hard':<18} {os.path.join(out, 'bbh')}/<family>.json, "
        f"{os.path.join(out, 'bbh_hard')}/<family>.json")  # fmt: skip
    return paths
