"""Judged open-ended evaluation: the student answers each prompt, a reference model's answer is read
from a file or asked for, and a judge model scores both, in both orders (judge.py).

The reference model and the judge sit behind OpenAI-compatible endpoints and are asked through the
teacher client (`orca_jax.datagen.teacher_client`: rate limits, retries with backoff, Retry-After,
a deadline per request, the API key only from the environment). Everything asked is appended to a
file as it arrives, so a killed evaluation, started again, asks only what was not yet answered:

    OUTPUT_DIR/judged_answers_step_<N>.jsonl          the student's answers (generated once per step)
    OUTPUT_DIR/judged_references_<set>.jsonl          a reference model's answers (when asked for)
    OUTPUT_DIR/judge_calls_step_<N>.jsonl             one line per judge reply: id "<set>/<prompt id>/<order>"
    OUTPUT_DIR/judgments_step_<N>.jsonl               per prompt: the prompt, both answers, both orders'
                                                      judge text and parsed scores (written last)

A judge call that failed every retry is asked again on the next run; a reply whose scores cannot
be read counts as unparsed and is kept. Metrics: `judged/<set>/{student_score, reference_score,
ratio, position_bias, unparsed, judgments, prompts}`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence

import jax

from orca_jax import paths
from orca_jax.datagen import collect
from orca_jax.datagen.teacher_client import Endpoint, Limiter, Result, Settings, Teacher
from orca_jax.errors import ConfigError, DataError
from orca_jax.evaluation import follow, judge
from orca_jax.evaluation.prompt_sets import OpenPrompt, read_prompt_set, read_references


@dataclasses.dataclass(frozen=True)
class Judged:
    """Prompt sets, where their reference answers come from, and the judge (see module docstring)."""

    prompt_sets: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> prompt file
    references: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> reference answers file
    judge_url: str = ""  # e.g. https://api.openai.com/v1, or a local vLLM server's /v1
    judge_model: str = ""  # Orca: gpt-4
    reference_url: str = ""  # asked for the sets without a references file
    reference_model: str = ""  # Orca: gpt-3.5-turbo (ChatGPT)
    api_key_env: str = "OPENAI_API_KEY"
    no_api_key: bool = False  # a remote endpoint that needs no key
    max_new_tokens: int = 1024  # the student's answers
    reference_max_tokens: int = 1024
    judge_max_tokens: int = judge.JUDGE_MAX_TOKENS
    judge_temperature: float = judge.JUDGE_TEMPERATURE
    concurrency: int = 8
    rpm: float = 0.0  # requests per minute, per endpoint; 0: no limit
    tpm: float = 0.0  # tokens per minute, per endpoint; 0: no limit
    timeout_s: float = 300.0
    max_retries: int = 8
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0

    def read(self) -> dict[str, list[OpenPrompt]]:
        """Every prompt set, checked, with its reference answers where a file gives them, before
        anything is asked."""
        if not self.prompt_sets:
            return {}
        if not (self.judge_url and self.judge_model):
            raise ConfigError("Judged.judge_url and Judged.judge_model: both are needed to judge the prompt sets")
        unknown = sorted(set(self.references) - set(self.prompt_sets))
        if unknown:
            raise ConfigError(f"Judged.references: {unknown} name no prompt set (the sets: {sorted(self.prompt_sets)})")
        sets = {name: read_prompt_set(path) for name, path in self.prompt_sets.items()}
        for name, prompts in sets.items():
            if name in self.references:
                answers, path = read_references(self.references[name]), self.references[name]
                missing = [p.id for p in prompts if p.id not in answers]
                if missing:
                    raise DataError(f"{path}: no reference answer for prompt ids {missing[:5]} of set {name!r}")
                sets[name] = [dataclasses.replace(p, reference=answers[p.id]) for p in prompts]
            elif not (self.reference_url and self.reference_model):
                raise ConfigError(f"prompt set {name!r}: give Judged.references['{name}'] (a file) or "
                                  f"Judged.reference_url and Judged.reference_model (a model to ask)")  # fmt: skip
        for url in (self.judge_url, self.reference_url):
            if url:
                collect.api_key_for(url, self.api_key_env, self.no_api_key, _log,
                                    ("Judged.api_key_env", "Judged.no_api_key"))  # fmt: skip
        return sets

    def settings(self, role: str) -> Settings:
        judging = role == "judge"
        return Settings(
            base_url=self.judge_url if judging else self.reference_url,
            model=self.judge_model if judging else self.reference_model,
            concurrency=self.concurrency, rpm=self.rpm, tpm=self.tpm, timeout_s=self.timeout_s,
            max_retries=self.max_retries, retry_base_s=self.retry_base_s, retry_max_s=self.retry_max_s,
            temperature=self.judge_temperature if judging else 0.7, top_p=1.0 if judging else 0.95,
            max_tokens=self.judge_max_tokens if judging else self.reference_max_tokens,
            keep_refusals=True,  # a refusal is an answer to judge, and a judge's words are read, not filtered
        )  # fmt: skip


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def evaluate(
    judged: Judged,
    sets: dict[str, list[OpenPrompt]],
    answer: Callable[[list[str], int], list[str]],
    out_dir: str,
    step: int,
) -> dict[str, float]:
    """Judged metrics for the checkpoint at `step`. `answer(prompts, max_new_tokens)` generates the
    student's answers (on every host: it is a collective); only the first host asks the endpoints."""
    if "://" in out_dir:
        raise ConfigError(f"{out_dir}: a judged evaluation appends to local files; set evaluate.output_dir to a "
                          "local folder")  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    student = student_answers(
        sets, answer, judged.max_new_tokens, os.path.join(out_dir, f"judged_answers_step_{step}.jsonl")
    )
    if jax.process_index() != 0:
        return {}
    metrics: dict[str, float] = {}
    rows_out: list[dict] = []
    for name, prompts in sets.items():
        if name in judged.references:  # read with the prompts, by Judged.read
            references = {p.id: p.reference for p in prompts}
        else:
            references = ask_references(judged, prompts, os.path.join(out_dir, f"judged_references_{name}.jsonl"))
        rows = judge_set(
            judged, name, prompts, student[name], references, os.path.join(out_dir, f"judge_calls_step_{step}.jsonl")
        )
        metrics.update({f"judged/{name}/{k}": v for k, v in judge.summarize(rows).items()})
        rows_out += rows
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows_out)
    paths.write_text(os.path.join(out_dir, f"judgments_step_{step}.jsonl"), lines)
    return metrics


def student_answers(sets: dict[str, list[OpenPrompt]], answer: Callable[[list[str], int], list[str]],
                    max_new_tokens: int, path: str) -> dict[str, dict[str, str]]:  # fmt: skip
    """Set -> prompt id -> the student's answer: read back from `path`, or generated and written there."""
    if follow.agree(int(os.path.exists(path))):  # every host takes the same branch: generation is collective
        found: dict[str, dict[str, str]] = {}
        with open(path, encoding="utf-8") as f:
            for row in map(json.loads, f):
                found.setdefault(row["set"], {})[row["id"]] = row["answer"]
        if all(p.id in found.get(name, {}) for name, prompts in sets.items() for p in prompts):
            return found
    keys = [(name, p) for name, prompts in sets.items() for p in prompts]
    generated = answer([p.text for _, p in keys], max_new_tokens)
    out: dict[str, dict[str, str]] = {}
    for (name, p), text in zip(keys, generated, strict=True):
        out.setdefault(name, {})[p.id] = text.strip()
    if jax.process_index() == 0:
        lines = "".join(json.dumps({"set": n, "id": p.id, "answer": out[n][p.id]}) + "\n" for n, p in keys)
        paths.write_text(path + ".tmp", lines)
        os.replace(path + ".tmp", path)  # whole or not at all: a half-written file is never read back
    return out


def ask_references(judged: Judged, prompts: Sequence[OpenPrompt], path: str) -> dict[str, str]:
    """The reference model's answer to each prompt, asked once: answers already in `path` are kept."""
    queries = [{"id": p.id, "question": p.text} for p in prompts]
    ask_all(judged.settings("reference"), judged, queries, path, "reference answers",
            lambda q, r: {"id": q["id"], "answer": r.response, "reason": r.reason, "detail": r.detail})  # fmt: skip
    answers = {row["id"]: row for row in _rows(path)}
    failed = [p.id for p in prompts if answers[p.id]["reason"] in ("failed", "bad_request")]
    if failed:
        detail = answers[failed[0]]["detail"]
        raise DataError(f"{path}: the reference model gave no answer to prompt ids {failed[:5]} ({detail}); "
                        "fix the endpoint and run again to ask them again")  # fmt: skip
    return {p.id: answers[p.id]["answer"] for p in prompts}


def judge_set(judged: Judged, name: str, prompts: Sequence[OpenPrompt], student: dict[str, str],
              references: dict[str, str], path: str) -> list[dict]:  # fmt: skip
    """Both orders of every prompt judged (those in `path` already are not asked again); one row per prompt."""
    queries = []
    for p in prompts:
        for order in judge.ORDERS:
            pair = (student[p.id], references[p.id]) if order == "student_first" else (references[p.id], student[p.id])
            queries.append({"id": f"{name}/{p.id}/{order}", **judge.judge_request(p.judge_kind, p.text, *pair)})

    def record(query: dict, result: Result) -> dict:
        scores = judge.parse_scores(result.response) if result.reason not in ("failed", "bad_request") else None
        return {"id": query["id"], "judge_text": result.response, "scores": scores, "reason": result.reason,
                "detail": result.detail}  # fmt: skip

    ask_all(judged.settings("judge"), judged, queries, path, f"judging {name}", record)
    calls = {row["id"]: row for row in _rows(path)}
    rows = []
    for p in prompts:
        row = {"set": name, "id": p.id, "category": p.category, "prompt": p.text, "student_answer": student[p.id],
               "reference_answer": references[p.id]}  # fmt: skip
        for order in judge.ORDERS:
            call = calls[f"{name}/{p.id}/{order}"]
            row[order] = {"judge_text": call["judge_text"], "scores": call["scores"], "reason": call["reason"]}
        rows.append(row)
    return rows


def _rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ask_all(settings: Settings, judged: Judged, queries: list[dict], path: str, label: str,
            record: Callable[[dict, Result], dict]) -> None:  # fmt: skip
    """Asks every query whose id is not yet in `path` (one whose every retry failed is asked again),
    on `settings.concurrency` threads, appending `record(query, result)` to `path` as each arrives."""
    done = collect.done_ids(path, drop_reason="failed", log=_log)
    pending = [q for q in queries if q["id"] not in done]
    if not pending:
        return
    api_key = collect.api_key_for(settings.base_url, judged.api_key_env, judged.no_api_key, lambda _: None)
    stop = threading.Event()
    endpoint = Endpoint(settings.base_url, api_key, settings.timeout_s)
    asker = Teacher(endpoint, settings, Limiter(settings.rpm, settings.tpm, stop), stop)
    progress = collect.Progress(len(pending), settings, label=label)
    out = collect.AppendLog(path)
    before = len(queries) - len(pending)
    _log(f"{label}: {before} of {len(queries)} answered before, {len(pending)} to ask {endpoint.url}")

    def handle(query: dict, result: Result) -> None:
        out.write(record(query, result))
        progress.add(result)

    try:  # on Ctrl-C, what was answered is in `path`; the next run asks the rest
        stopped_by = collect.ask_each(iter(pending), asker, handle, settings.concurrency,
                                      lambda: progress.tick(asker.retries))  # fmt: skip
        progress.tick(asker.retries, final=True)
    finally:
        out.close()
    if stopped_by:
        raise DataError(f"{label} stopped: {stopped_by}; run again to ask what is left")
