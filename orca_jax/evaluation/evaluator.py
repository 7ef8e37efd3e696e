"""Evaluates one checkpoint on the configured suites and writes what it found.

Suites (each optional): BIG-Bench Hard (`bbh_dir`), AGIEval (`agieval_dir`), folders of your own
BBH-format tasks (`task_dirs`, e.g. the mini-Orca held-out sets), the held-out explanation loss
on response tokens (`heldout`: record files, or "training" for the run's own validation split),
and open-ended prompt sets scored by a judge model against a reference model (`judged`, judged.py).
Every benchmark file is read and checked before the model is loaded, so bad input stops the run
before any compute is spent.

The checkpoint carries its model and data config (vocabulary, chat template, row length), so the
questions are asked in the layout the model was trained on. Outputs, in OUTPUT_DIR (by default
CHECKPOINT_DIR/eval):

    inferences_step_<N>.jsonl   per example: task, input, target, generation, answer, correct,
                                options (+ ranked, rank_correct when options are ranked)
    tensorboard/                the metrics as scalars at step N
    metrics_step_<N>.json       the metrics, written last and atomically: it exists only complete

Metrics: per task `<suite>/<task>/accuracy`, `/parsed` (the share of generations whose answer could
be read) and `/examples`; per suite `<suite>/average` (a macro average over its tasks); for BBH also
`bbh/average_orca23`, the average over the 23 tasks Orca reports; `heldout/loss`, ...;
`judged/<set>/ratio`, ... (judged.py, which also lists the files a judged evaluation writes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Sequence

import jax
import tensorflow as tf

from orca_jax import paths
from orca_jax.checkpoints import bundle
from orca_jax.data.config import DataConfig, FileSet
from orca_jax.data.templates import get_template
from orca_jax.errors import ConfigError, DataError
from orca_jax.evaluation import answers, follow, heldout, responses, suites
from orca_jax.evaluation.judged import Judged
from orca_jax.evaluation.judged import evaluate as evaluate_judged
from orca_jax.evaluation.prompt_sets import OpenPrompt
from orca_jax.evaluation.suites import Example
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig

SCORING = ("generate", "rank", "both")


@dataclasses.dataclass(frozen=True)
class Suites:
    """What to evaluate on; see the module docstring."""

    bbh_dir: str = ""
    bbh_tasks: Sequence[str] = suites.BBH_TASKS
    agieval_dir: str = ""
    agieval_tasks: Sequence[str] = suites.AGIEVAL_TASKS
    task_dirs: dict[str, str] = dataclasses.field(default_factory=dict)  # suite name -> folder
    heldout: str = ""  # record files (paths or globs), or "training"

    def read_examples(self) -> list[Example]:
        examples: list[Example] = []
        if self.bbh_dir:
            examples += suites.read_bbh(self.bbh_dir, tuple(self.bbh_tasks))
        if self.agieval_dir:
            examples += suites.read_agieval(self.agieval_dir, tuple(self.agieval_tasks))
        for suite, folder in self.task_dirs.items():
            examples += suites.read_task_folder(folder, suite)
        return examples


@dataclasses.dataclass(frozen=True)
class Generation:
    system_message: str = ""  # Orca evaluates zero-shot with an empty system message
    scoring: str = "generate"  # generate | rank (multiple-choice options by likelihood) | both
    batch_size: int = 32
    max_new_tokens: int = 256
    stop_strings: Sequence[str] = ("### User:", "<|im_end|>", "[INST]")
    temperature: float = 0.0  # greedy
    top_p: float = 1.0
    seed: int = 0
    length_normalized: bool = False  # rank options by mean rather than summed token log-probability


def task_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """Per-task and per-suite metrics from inference rows (generation, and ranking when present)."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    metrics: dict[str, float] = {}
    by_suite: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for task in sorted(by_task):
        group = by_task[task]
        n = len(group)
        scores = {"examples": float(n)}
        if all("generation" in r for r in group):
            scores["accuracy"] = sum(bool(r["correct"]) for r in group) / n
            scores["parsed"] = sum(r["answer"] is not None for r in group) / n
        if all("rank_correct" in r for r in group):
            scores["rank_accuracy"] = sum(bool(r["rank_correct"]) for r in group) / n
        metrics.update({f"{task}/{k}": v for k, v in scores.items()})
        suite, _, name = task.partition("/")
        by_suite[suite][name] = scores
    for suite, tasks in by_suite.items():
        for key in ("accuracy", "rank_accuracy", "parsed"):
            values = {name: s[key] for name, s in tasks.items() if key in s}
            if values:
                name = f"{suite}/average" + ("" if key == "accuracy" else f"_{key}")
                metrics[name] = sum(values.values()) / len(values)
            orca = [v for name, v in values.items() if name not in suites.BBH_NOT_IN_ORCA]
            if suite == "bbh" and key == "accuracy" and len(orca) == len(suites.BBH_TASKS) - 4:
                metrics["bbh/average_orca23"] = sum(orca) / len(orca)
    return metrics


def heldout_loss(model: Decoder, params, mesh, data: DataConfig, batch_size: int) -> dict[str, float]:
    """Mean loss and token accuracy on the response tokens of `data`'s validation split."""
    loss_step = heldout.jit_loss_step(model, jax.tree.map(lambda x: x.sharding, params), mesh)
    scores = heldout.response_loss(loss_step, params, mesh, data, sharding.host_batch_size(batch_size, mesh))
    return {f"heldout/{name}": value for name, value in scores.items()}


def heldout_data(model_bundle: bundle.ModelBundle, heldout: str) -> DataConfig:
    trained = model_bundle.meta.get("data")
    if heldout == "training" and not trained:
        raise ConfigError("heldout = 'training' needs a checkpoint written by orca-train (it names its data)")
    base = DataConfig.from_dict(trained) if trained else DataConfig(sources=(FileSet("heldout", ""),))
    sources = base.sources if heldout == "training" else (FileSet("heldout", train="", validation=heldout),)
    return dataclasses.replace(
        base, sources=sources, vocabulary=model_bundle.vocabulary_spec, template=model_bundle.template,
        added_tokens=model_bundle.added_tokens,
        policy="skip",  # count and report bad held-out records; they are not trained on
    )  # fmt: skip


def evaluate_checkpoint(
    checkpoint_dir: str,
    step: int,
    examples: Sequence[Example],
    suites: Suites,
    generation: Generation,
    mesh,
    output_dir: str,
    judged: Judged = Judged(),
    judged_sets: dict[str, list[OpenPrompt]] | None = None,
) -> dict[str, float]:
    """Evaluates the checkpoint at `step` on `examples` (read by `suites.read_examples()`) and on the
    open-ended `judged_sets` (read by `judged.read()`), writes the outputs and returns the metrics."""
    if generation.scoring not in SCORING:
        raise ConfigError(f"scoring = {generation.scoring!r}; choose one of {SCORING}")
    for name in ("batch_size", "max_new_tokens"):
        if getattr(generation, name) < 1:
            raise ConfigError(f"Generation.{name} = {getattr(generation, name)}; it must be at least 1")
    start = time.time()
    with sharding.use_mesh(mesh):
        model_bundle = bundle.load(checkpoint_dir, mesh, step=step)
        model, params = model_bundle.model, model_bundle.params
        vocab, template = model_bundle.vocabulary(), get_template(model_bundle.template)
        common = dict(system_message=generation.system_message, batch_size=generation.batch_size)
        rows: list[dict] = []
        if examples and generation.scoring in ("generate", "both"):
            rows = responses.generate_answers(
                model, params, mesh, vocab, template, examples, max_new_tokens=generation.max_new_tokens,
                stop_strings=generation.stop_strings, temperature=generation.temperature, top_p=generation.top_p,
                seed=generation.seed, **common,
            )  # fmt: skip
        else:
            rows = [{"task": ex.task, "input": ex.input, "target": ex.target} for ex in examples]
        if generation.scoring in ("rank", "both"):
            ranked_examples = [(row, ex) for row, ex in zip(rows, examples, strict=True) if ex.options]
            choices = responses.rank_options(model, params, mesh, vocab, template, [ex for _, ex in ranked_examples],
                                           length_normalized=generation.length_normalized, **common)  # fmt: skip
            for (row, ex), choice in zip(ranked_examples, choices, strict=True):
                row["ranked"] = choice
                row["rank_correct"] = answers.is_correct(choice, ex.target, ex.form)
            rows = [row for row in rows if "generation" in row or "ranked" in row]
        metrics = {"step": float(model_bundle.step), **task_metrics(rows)}
        if suites.heldout:
            data = heldout_data(model_bundle, suites.heldout)
            metrics.update(heldout_loss(model, params, mesh, data, generation.batch_size))
        if judged_sets:

            def answer(prompts: list[str], max_new_tokens: int) -> list[str]:
                asked = [Example("judged/open", prompt, "", "free") for prompt in prompts]
                rows = responses.generate_answers(
                    model, params, mesh, vocab, template, asked, max_new_tokens=max_new_tokens,
                    stop_strings=generation.stop_strings, temperature=generation.temperature, top_p=generation.top_p,
                    seed=generation.seed, **common,
                )  # fmt: skip
                return [row["generation"] for row in rows]

            metrics.update(evaluate_judged(judged, judged_sets, answer, output_dir, model_bundle.step))
    metrics["eval_seconds"] = time.time() - start
    if jax.process_index() == 0:
        print(f"metrics: {write_outputs(output_dir, model_bundle.step, metrics, rows)}", flush=True)
    return metrics


def write_outputs(out_dir: str, step: int, metrics: dict[str, float], rows: Sequence[dict]) -> str:
    """Inferences and TensorBoard scalars first, the metrics file last (via a rename), so a metrics
    file exists only for a finished evaluation. Returns the metrics file's path."""
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    paths.write_text(os.path.join(out_dir, f"inferences_step_{step}.jsonl"), lines)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    with writer.as_default(step=step):
        for name, value in metrics.items():
            tf.summary.scalar(name, value)
    writer.close()
    final = os.path.join(out_dir, f"metrics_step_{step}.json")
    paths.write_text(final + ".tmp", json.dumps(metrics, indent=1))
    tf.io.gfile.rename(final + ".tmp", final, overwrite=True)
    return final


def evaluate(
    checkpoint_dir: str,
    *,
    steps: str | int = "latest",
    suites: Suites = Suites(),
    generation: Generation = Generation(),
    mesh_config: MeshConfig = MeshConfig(),
    output_dir: str = "",
    poll_seconds: float = 60.0,
    timeout_seconds: float = 0.0,
    judged: Judged = Judged(),
) -> list[dict[str, float]]:
    """Evaluates the checkpoints of `checkpoint_dir` that `steps` selects (see follow.py): an
    orca_jax run, an export, or a Hugging Face folder. Returns each one's metrics."""
    follow.checkpoint_steps(checkpoint_dir)  # a folder with no checkpoints fails here, first
    judged_sets = judged.read()  # so do bad prompt sets, reference files and judge settings
    examples = suites.read_examples()  # and bad benchmark files, before any parameters are read
    if not examples and not suites.heldout and not judged_sets:
        raise ConfigError("nothing to evaluate: set bbh_dir, agieval_dir, task_dirs, heldout or Judged.prompt_sets")
    mesh = sharding.make_mesh(mesh_config)
    out = output_dir or os.path.join(paths.absolute(checkpoint_dir), "eval")

    def one(step: int | None) -> dict[str, float]:
        return evaluate_checkpoint(checkpoint_dir, step, examples, suites, generation, mesh, out, judged, judged_sets)

    return follow.follow(checkpoint_dir, steps, one, out, poll_seconds=poll_seconds, timeout_seconds=timeout_seconds)


def rescore(rows: Sequence[dict], where: str) -> tuple[dict[str, float], list[dict]]:
    """Answers and metrics recomputed from inference rows (their task, target and generation; their
    options, or for older rows the input's), with no model. Returns the metrics and the rows."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        for key in ("task", "target", "generation"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}:{i + 1}: {key}: missing or not a string")
        by_task[row["task"]].append(i)
    rescored = [dict(row) for row in rows]
    for indices in by_task.values():
        form = answers.infer_form([rows[i]["target"] for i in indices])
        for i in indices:
            row = rescored[i]
            options = row.get("options")
            if not isinstance(options, dict):  # written before rows kept their options: read them off the input
                options = answers.options_in(row.get("input") or "")
                if form == "letter":
                    options = {x: "" for x in re.findall(r"\(([A-J])\)", row.get("input") or "")}
            row["answer"] = answers.extract(row["generation"], form, options)
            row["correct"] = answers.is_correct(row["answer"], row["target"], form)
            row.pop("rank_correct", None)  # a ranking cannot be recomputed without the model
            row.pop("ranked", None)
    return task_metrics(rescored), rescored
