"""The training loop: build the mesh, the model and the data, resume or initialize, step, log, save.

`train(...)` is plain Python with explicit arguments; `orca_jax/train.py` is the binary that fills
them from gin. Everything the run writes goes into MODEL_DIR:

    MODEL_DIR/config.gin            the resolved gin config (written by the binary)
    MODEL_DIR/checkpoints/<step>/   Orbax checkpoints (see checkpoint.py)
    MODEL_DIR/metrics.jsonl         one JSON object per log step
    MODEL_DIR/tensorboard/train/    TensorBoard scalars
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import jax
import numpy as np

from orca_jax import bundle
from orca_jax.data.tasks import REJECT_REASONS, DataConfig, host_batches, rejected_counts, validate_files
from orca_jax.data.vocab import make_vocabulary
from orca_jax.errors import ConfigError
from orca_jax.model.config import DTYPES, ModelConfig
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig
from orca_jax.training import step as step_lib
from orca_jax.training.checkpoint import Checkpoints, checkpoints_dir
from orca_jax.training.metrics import MetricsLogger
from orca_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_steps: int = 1000
    batch_size: int = 32  # rows per step, over all hosts
    log_every: int = 50
    checkpoint_every: int = 500  # the final step is always saved
    keep_checkpoints: int = 3  # newest checkpoints kept; 0 keeps all
    seed: int = 0  # parameter init and data order


def check_vocabulary(model_config: ModelConfig, data_config: DataConfig) -> None:
    vocab_size = make_vocabulary(data_config.vocabulary).vocab_size
    if model_config.vocab_size < vocab_size:
        raise ConfigError(
            f"ModelConfig.vocab_size {model_config.vocab_size} is smaller than the vocabulary "
            f"{data_config.vocabulary!r} ({vocab_size} ids)"
        )


# Fields that change only how the model runs, not what it computes: a run may differ from the
# checkpoint it starts from in these.
RUNTIME_FIELDS = ("param_dtype", "dtype", "remat", "attention")


def check_same_model(run: ModelConfig, source: ModelConfig, where: str) -> None:
    differ = [
        f"{f}: run {getattr(run, f)!r}, checkpoint {getattr(source, f)!r}"
        for f in run.to_dict()
        if f not in RUNTIME_FIELDS and getattr(run, f) != getattr(source, f)
    ]
    if differ:
        raise ConfigError(
            f"init_from {where}: the run's ModelConfig differs from the checkpoint's ({'; '.join(differ)})"
        )


def train(
    model_dir: str,
    model_config: ModelConfig,
    data_config: DataConfig,
    optimizer_config: OptimizerConfig = OptimizerConfig(),
    mesh_config: MeshConfig = MeshConfig(),
    train_config: TrainConfig = TrainConfig(),
    init_from: str = "",
) -> dict[str, float]:
    """Trains to `train_config.num_steps`, resuming from MODEL_DIR's latest checkpoint if there is one.

    A new run starts from the parameters in `init_from` (an orca_jax run or export, an
    `orca-import-hf` output, or a Hugging Face folder) when given, else from a random init.
    Returns the metrics of the last log step."""
    check_vocabulary(model_config, data_config)
    mesh = sharding.make_mesh(mesh_config)
    rows_per_host = sharding.host_batch_size(train_config.batch_size, mesh)
    model = Decoder(model_config)
    total = train_config.num_steps
    tx = make_optimizer(optimizer_config, total)
    schedule = learning_rate_schedule(optimizer_config, total)
    checkpoints = Checkpoints(
        checkpoints_dir(model_dir),
        save_every=train_config.checkpoint_every,
        keep=train_config.keep_checkpoints or None,
    )
    start = checkpoints.latest_step() or 0
    # Reading every record once (strict: stop at the first bad one) and building the pipeline both
    # happen before anything is compiled.
    validated = check_data(model_dir, data_config, fresh=not start)
    batches = host_batches(
        data_config, "train", rows_per_host, shuffle=True, seed=train_config.seed, num_epochs=None,
        shard_index=jax.process_index(), num_shards=jax.process_count(),
    )  # fmt: skip
    meta = {
        "model": model_config.to_dict(),
        "data": data_config.to_dict(),
        "vocabulary": bundle.store_vocabulary(data_config.vocabulary, model_dir),
        "template": data_config.template,
        "added_tokens": list(data_config.added_tokens),
        "source": {"init_from": os.path.abspath(init_from) if init_from else ""},
    }
    rejected = np.zeros(len(REJECT_REASONS), np.int64)  # records the pipeline dropped, per reason

    with sharding.use_mesh(mesh):
        boxed = step_lib.abstract_state(model, tx)
        shardings = sharding.shardings_of(boxed, mesh)
        if start:
            print(f"resuming from {checkpoints.directory}/{start}", flush=True)
            state = checkpoints.restore_state(start, sharding.strip_axis_names(boxed), shardings)
            batches.restore(data_state_path(model_dir, start))
            rejected += np.array(
                [checkpoints.restore_meta(start).get("rejected", {}).get(r, 0) for r in REJECT_REASONS]
            )
        elif init_from:
            source = bundle.load(init_from, mesh)
            check_same_model(model_config, source.config, init_from)
            print(f"starting from the parameters in {init_from} (step {source.step})", flush=True)
            state = step_lib.state_from_params(tx, source.params, shardings, DTYPES[model_config.param_dtype])
            del source
        else:
            state = step_lib.init_state(model, tx, train_config.seed, shardings)
        print(
            f"model: {model_config.num_params():,} parameters | mesh {dict(mesh.shape)} | "
            f"batch {train_config.batch_size} x {data_config.sequence_length} | steps {start}->{total}"
            + (f" | data: {validated}" if validated else ""),
            flush=True,
        )
        train_step = step_lib.jit_train_step(model, tx, schedule, shardings, mesh)

        logger = MetricsLogger(model_dir, total_steps=total, start_step=start)
        pending, timed, last, last_time, last_step, last_counted = [], 0, {}, time.time(), start, 0
        for step in range(start, total):
            state, metrics = train_step(state, sharding.global_batch(next(batches), mesh))
            pending.append(metrics)
            if step == start:  # throughput counts the steps after compilation
                jax.block_until_ready(metrics)
                print(f"first step (compilation included): {time.time() - last_time:.1f}s", flush=True)
                last_time = time.time()
            else:
                timed += 1
            done = step + 1
            if done % train_config.checkpoint_every == 0 or done == total:
                pending = jax.device_get(pending)
                rejected += sum(m["rejected"] for m in pending[last_counted:])
                last_counted = len(pending)
                batches.save(data_state_path(model_dir, done))  # before the checkpoint that refers to it
                checkpoints.save(done, state, {**meta, "rejected": rejected_counts(rejected)}, force=True)
                prune_data_states(model_dir, checkpoints.all_steps() + [done])
            if done % train_config.log_every == 0 or done == total:
                pending = jax.device_get(pending)
                rejected += sum((m["rejected"] for m in pending[last_counted:]), np.zeros_like(rejected))
                last = summarize(pending, timed, time.time() - last_time, train_config, data_config)
                last.update({f"data/rejected_{k}": float(v) for k, v in rejected_counts(rejected).items()})
                logger.write(done, last, done - last_step)
                pending, timed, last_time, last_step, last_counted = [], 0, time.time(), done, 0
        checkpoints.wait()
        checkpoints.close()
        logger.close()
    if start >= total:
        print(f"{checkpoints.directory} already holds step {start} >= num_steps {total}: nothing to train", flush=True)
    return last


def summarize(
    steps: list[dict], timed: int, seconds: float, train_config: TrainConfig, data_config: DataConfig
) -> dict[str, float]:
    """Means over the steps since the last log; throughput over the last `timed` of them, which ran in
    `seconds` (none when the only step was the one that compiled)."""
    out = {k: float(np.mean([m[k] for m in steps])) for k in ("loss", "accuracy", "grad_norm")}
    out["learning_rate"] = float(steps[-1]["learning_rate"])
    out["loss_tokens_per_step"] = float(np.mean([m["loss_tokens"] for m in steps]))
    if timed:
        out["step_time"] = seconds / timed
        out["tokens_per_sec"] = float(sum(m["real_tokens"] for m in steps[-timed:])) / seconds
        out["row_slots_per_sec"] = timed * train_config.batch_size * data_config.sequence_length / seconds
    return out


def check_data(model_dir: str, data_config: DataConfig, fresh: bool) -> str:
    """Validates the training records once per run (at its start, on the first host): `strict` stops
    at the first bad record, `skip` writes MODEL_DIR/rejects.jsonl and a count per reason."""
    if not fresh or jax.process_index() != 0:
        return ""
    counts = validate_files(data_config, "train", os.path.join(model_dir, "rejects.jsonl"))
    with open(os.path.join(model_dir, "data_report.json"), "w") as f:
        json.dump({"records": dict(counts), "policy": data_config.policy}, f, indent=1)
    bad = {k: v for k, v in counts.items() if k != "ok"}
    return f"{counts['ok']:,} valid records" + (f", skipped {bad} (see rejects.jsonl)" if bad else "")


def data_state_path(model_dir: str, step: int) -> str:
    """Where this host's input-pipeline position at `step` is saved (next to the Orbax checkpoint)."""
    return os.path.join(model_dir, "data_state", str(step), f"host_{jax.process_index():05d}", "iterator")


def prune_data_states(model_dir: str, keep_steps: list[int]) -> None:
    root = os.path.join(model_dir, "data_state")
    if jax.process_index() != 0 or not os.path.isdir(root):
        return
    for name in os.listdir(root):
        if name.isdigit() and int(name) not in keep_steps:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
