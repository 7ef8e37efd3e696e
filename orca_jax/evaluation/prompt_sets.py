"""Open-ended prompt sets and reference answers, read from local files in their public layouts.

Orca's first table scores open-ended answers (judge.py): Vicuna's 80 questions, the
Awesome-ChatGPT prompts and WizardLM's 218 test prompts. Each file becomes a list of `OpenPrompt`s:
an id (what reference answers and judgments are keyed by), the text the model is asked, and a
category that picks the judging prompt.

    FastChat        vicuna_bench/question.jsonl   {"question_id": 1, "category": "generic", "turns": ["How can I ..."]}
                    (the older eval/table/question.jsonl: {"question_id": 1, "text": "...", "category": "generic"})
                    Multi-turn questions (MT-Bench) are asked their first turn only.
    WizardLM        WizardLM_testset.jsonl        {"idx": 1, "Skill": "Math", "Difficulty": 1, "Instruction": "..."}
    Awesome-ChatGPT prompts.csv                   "act","prompt"[,...]: the id is the row number (1 = first prompt)
    your own        JSONL with an id ("question_id", "idx" or "id") and "question", "prompt" or "instruction"

Reference answers (JSONL), matched to prompts by id:

    FastChat        model_answer/<model>.jsonl    {"question_id": 1, "choices": [{"turns": ["..."]}], ...}
    Vicuna's eval   table/answer/answer_gpt35.jsonl {"question_id": 1, "text": "...", ...}
    your own        {"id" | "question_id" | "idx": ..., "answer" | "response" | "output": "..."}
"""

from __future__ import annotations

import csv
import dataclasses

from orca_jax.errors import DataError
from orca_jax.evaluation.suites import read_jsonl, read_text

ID_FIELDS = ("question_id", "idx", "id")
TEXT_FIELDS = ("turns", "text", "Instruction", "instruction", "question", "prompt")
ANSWER_FIELDS = ("choices", "text", "answer", "response", "output")


@dataclasses.dataclass(frozen=True)
class OpenPrompt:
    id: str
    text: str
    category: str = ""  # the file's own label ("coding", "math", "Code Generation", ...)
    reference: str | None = None  # the reference answer, when a file gives it

    @property
    def judge_kind(self) -> str:
        """Which of Vicuna's judging prompts fits: 'coding', 'math' or 'general'."""
        label = self.category.lower()
        if "cod" in label:  # Vicuna's "coding", WizardLM's "Code Generation" / "Code Debug"
            return "coding"
        return "math" if "math" in label else "general"


def _id(obj: dict, where: str) -> str:
    for field in ID_FIELDS:
        if isinstance(obj.get(field), (str, int)) and not isinstance(obj.get(field), bool):
            return str(obj[field])
    raise DataError(f"{where}: no id: expected one of {', '.join(ID_FIELDS)}")


def _unique(prompts: list, path: str) -> None:
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise DataError(f"{path}: id {p.id!r} appears twice; ids must be unique")
        seen.add(p.id)


def read_prompt_set(path: str) -> list[OpenPrompt]:
    """The prompts of one file in any layout above (a .csv is the Awesome-ChatGPT layout)."""
    prompts = _read_csv(path) if path.lower().endswith(".csv") else _read_jsonl(path)
    _unique(prompts, path)
    return prompts


def _read_jsonl(path: str) -> list[OpenPrompt]:
    prompts = []
    for where, obj in read_jsonl(path):
        field = next((f for f in TEXT_FIELDS if f in obj), None)
        text = obj.get(field) if field else None
        if field == "turns":
            text = text[0] if isinstance(text, list) and text else None
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: no prompt: expected a non-empty {' or '.join(TEXT_FIELDS)} field")
        category = obj.get("category", obj.get("Skill", ""))
        prompts.append(OpenPrompt(_id(obj, where), text.strip(), category if isinstance(category, str) else ""))
    return prompts


def _read_csv(path: str) -> list[OpenPrompt]:
    reader = csv.DictReader(read_text(path).splitlines(keepends=True))
    if not reader.fieldnames or "prompt" not in reader.fieldnames:
        raise DataError(f'{path}: expected a CSV with a "prompt" column (awesome-chatgpt-prompts\' prompts.csv)')
    prompts = []
    for number, row in enumerate(reader, 1):
        text = (row.get("prompt") or "").strip()
        if not text:
            raise DataError(f"{path}: row {number}: prompt: empty")
        prompts.append(OpenPrompt(str(number), text, "writing"))
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def read_references(path: str) -> dict[str, str]:
    """Prompt id -> reference answer, from a reference answers file (layouts above)."""
    answers: dict[str, str] = {}
    for where, obj in read_jsonl(path):
        key = _id(obj, where)
        field = next((f for f in ANSWER_FIELDS if f in obj), None)
        text = obj.get(field) if field else None
        if field == "choices":  # FastChat: the first choice's first turn
            try:
                text = text[0]["turns"][0]
            except (TypeError, KeyError, IndexError):
                text = None
        if not isinstance(text, str):
            raise DataError(f"{where}: no answer: expected {' or '.join(ANSWER_FIELDS)} (a string)")
        if key in answers:
            raise DataError(f"{where}: id {key!r} appears twice")
        answers[key] = text.strip()
    return answers
