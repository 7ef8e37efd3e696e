"""Evaluates one checkpoint: held-out loss on response tokens, and exact-match accuracy of greedy answers.

The checkpoint carries its model and data config (vocabulary, chat template, row length), so the
evaluation needs no model flags and asks questions in the layout the model was trained on. Outputs
go into the run's folder:

    CHECKPOINT_DIR/eval/metrics_step_<N>.json       the metrics below
    CHECKPOINT_DIR/eval/inferences_step_<N>.jsonl   per question: task, input, target, generation, answer, correct
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

from orca_jax import bundle, paths
from orca_jax.data.tasks import DataConfig, FileSet, host_batches
from orca_jax.data.templates import get_template
from orca_jax.evaluation import answers
from orca_jax.evaluation.benchmarks import read_bbh_file
from orca_jax.model.decode import generate
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig
from orca_jax.training.step import jit_eval_step


def heldout_loss(model: Decoder, params, mesh, data: DataConfig, batch_size: int) -> dict[str, float]:
    """Mean loss and token accuracy on the response tokens of `data`'s validation files."""
    step = jit_eval_step(model, jax.tree.map(lambda x: x.sharding, params), mesh)
    totals = {"loss_sum": 0.0, "weight_sum": 0.0, "correct_sum": 0.0}
    rows = sharding.host_batch_size(batch_size, mesh)
    batches = host_batches(data, "validation", rows, shuffle=False, seed=None, num_epochs=1,
                           shard_index=jax.process_index(), num_shards=jax.process_count())  # fmt: skip
    for batch in batches:
        sums = jax.device_get(step(params, sharding.global_batch(batch, mesh)))
        totals = {k: totals[k] + float(sums[k]) for k in totals}
    weight = max(totals["weight_sum"], 1.0)
    return {
        "heldout_loss": totals["loss_sum"] / weight,
        "heldout_token_accuracy": totals["correct_sum"] / weight,
        "heldout_response_tokens": totals["weight_sum"],
    }


def answer_accuracy(
    model: Decoder,
    params,
    mesh,
    data: DataConfig,
    bbh_file: str,
    *,
    system_message: str,
    batch_size: int,
    max_new_tokens: int,
) -> tuple[dict[str, float], list[dict]]:
    """Greedy answers to a BBH-format file, scored by exact match of the extracted answer."""
    vocab = data.make_vocabulary()
    template = get_template(data.template)
    examples = read_bbh_file(bbh_file)
    inferences = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        prompts = [[vocab.bos_id, *vocab.encode(template.prompt(system_message, ex.input))] for ex in chunk]
        outputs = generate(model, params, prompts, max_new_tokens=max_new_tokens, eos_id=vocab.eos_id, mesh=mesh)
        for ex, out in zip(chunk, outputs, strict=True):
            generation = vocab.decode(out)
            answer = answers.extract_answer(generation)
            inferences.append(
                {
                    "task": ex.task,
                    "input": ex.input,
                    "target": ex.target,
                    "generation": generation,
                    "answer": answer,
                    "correct": answer is not None and answer == answers.normalize(ex.target),
                }
            )
    n = len(inferences)
    task = examples[0].task
    metrics = {
        f"{task}/accuracy": sum(r["correct"] for r in inferences) / n,
        f"{task}/parsed": sum(r["answer"] is not None for r in inferences) / n,
        f"{task}/examples": float(n),
    }
    return metrics, inferences


def evaluate(
    checkpoint_dir: str,
    *,
    step: int | None = None,
    heldout_files: str = "",
    bbh_file: str = "",
    system_message: str = "",
    batch_size: int = 64,
    max_new_tokens: int = 256,
    sequence_length: int = 0,
    mesh_config: MeshConfig = MeshConfig(),
) -> dict[str, float]:
    """Evaluates the checkpoint at `step` (the latest when None) and writes metrics and inferences.

    `checkpoint_dir` is an orca_jax run (or export) or a Hugging Face folder. Rows for the held-out
    loss are `sequence_length` long: by default the length the run trained with, else 2048."""
    start = time.time()
    mesh = sharding.make_mesh(mesh_config)
    metrics: dict[str, float] = {}
    with sharding.use_mesh(mesh):
        model_bundle = bundle.load(checkpoint_dir, mesh, step=step)
        metrics["step"] = float(model_bundle.step)
        model, params = model_bundle.model, model_bundle.params
        trained = model_bundle.meta.get("data")
        base = DataConfig.from_dict(trained) if trained else DataConfig(sources=(FileSet("heldout", ""),))
        data = dataclasses.replace(
            base,
            sources=(FileSet("heldout", train="", validation=heldout_files),),
            vocabulary=model_bundle.vocabulary_spec,
            template=model_bundle.template,
            added_tokens=model_bundle.added_tokens,
            sequence_length=sequence_length or base.sequence_length,
            policy="skip",  # count and report bad held-out records; they are not trained on
        )
        if heldout_files:
            metrics.update(heldout_loss(model, params, mesh, data, batch_size))
        inferences = []
        if bbh_file:
            scores, inferences = answer_accuracy(
                model, params, mesh, data, bbh_file,
                system_message=system_message, batch_size=batch_size, max_new_tokens=max_new_tokens,
            )  # fmt: skip
            metrics.update(scores)
    metrics["eval_seconds"] = time.time() - start
    if jax.process_index() == 0:
        write_outputs(os.path.join(checkpoint_dir, "eval"), model_bundle.step, metrics, inferences)
    return metrics


def write_outputs(out_dir: str, step: int, metrics: dict[str, float], inferences: list[dict]) -> None:
    paths.write_text(os.path.join(out_dir, f"metrics_step_{step}.json"), json.dumps(metrics, indent=1))
    if inferences:
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in inferences)
        paths.write_text(os.path.join(out_dir, f"inferences_step_{step}.jsonl"), lines)
