"""The training loop: build the mesh, the model and the data, resume or initialize, step, log, save.

`train(...)` is plain Python with explicit arguments; `orca_jax/train.py` is the binary that fills
them from gin. Everything the run writes goes into MODEL_DIR:

    MODEL_DIR/config.gin            the resolved gin config (written by the binary)
    MODEL_DIR/checkpoints/<step>/   Orbax checkpoints (see checkpoint.py)
    MODEL_DIR/data_state/<step>/    each data shard's position at that checkpoint (see data_feed.py)
    MODEL_DIR/metrics.jsonl         one JSON object per log step (and per validation)
    MODEL_DIR/tensorboard/train/    TensorBoard scalars
    MODEL_DIR/data_report.json      records read at the start, valid and rejected per reason

A run never loses more than the steps since its last checkpoint: it resumes from the latest
complete one with parameters, optimizer state and data position, so that it continues exactly
as if it had not stopped. SIGTERM (what a TPU preemption sends) saves a checkpoint at the current
step and ends the run cleanly.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from orca_jax import bundle, paths
from orca_jax.data.packing import MODEL_FEATURES
from orca_jax.data.tasks import REJECT_REASONS, DataConfig, host_batches, rejected_counts
from orca_jax.errors import ConfigError, UserError
from orca_jax.model.config import DTYPES, ModelConfig
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig
from orca_jax.training import flops
from orca_jax.training import step as step_lib
from orca_jax.training.checkpoint import Checkpoints, checkpoints_dir, clear_finished, mark_finished
from orca_jax.training.data_feed import DataFeed, check_data, prune_data_states
from orca_jax.training.metrics import MetricsLogger
from orca_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_steps: int = 1000
    batch_size: int = 32  # rows per step, over all hosts
    microbatches: int = 1  # gradient accumulation: the batch runs in this many slices
    log_every: int = 50
    checkpoint_every: int = 500  # the final step is always saved
    keep_checkpoints: int = 3  # the newest checkpoints kept; 0 keeps all
    keep_every: int = 0  # also keep every checkpoint whose step is a multiple of this
    eval_every: int = 0  # validation loss on the held-out split every N steps (0: never)
    eval_batches: int = 0  # batches per validation (0: the whole split)
    max_nonfinite: int = 10  # stop after this many consecutive non-finite losses or gradients
    data_shards: int = 0  # see data_feed.py; 0: one per host
    seed: int = 0  # parameter init and data order


class TrainingStopped(UserError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


def check_vocabulary(model_config: ModelConfig, data_config: DataConfig) -> None:
    vocab_size = data_config.make_vocabulary().vocab_size
    if model_config.vocab_size < vocab_size:
        raise ConfigError(
            f"ModelConfig.vocab_size {model_config.vocab_size} is smaller than the vocabulary "
            f"{data_config.vocabulary!r} ({vocab_size} ids)"
        )


# Fields that change only how the model runs, not what it computes: a run may differ from the
# checkpoint it starts from in these.
RUNTIME_FIELDS = ("param_dtype", "dtype", "remat", "attention")


def check_same_model(run: ModelConfig, source: ModelConfig, where: str) -> None:
    run, source = run.resolved(), source.resolved()
    differ = [
        f"{f}: run {getattr(run, f)!r}, checkpoint {getattr(source, f)!r}"
        for f in run.to_dict()
        if f not in RUNTIME_FIELDS and getattr(run, f) != getattr(source, f)
    ]
    if differ:
        raise ConfigError(
            f"init_from {where}: the run's ModelConfig differs from the checkpoint's ({'; '.join(differ)})"
        )


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """The sharded train step and what it is built from: what `train` runs, and what orca-compile
    compiles ahead of time for a TPU topology."""

    mesh: Mesh
    model: Decoder
    tx: optax.GradientTransformation
    boxed_state: step_lib.TrainState  # shapes and logical axis names
    shardings: step_lib.TrainState  # a NamedSharding per leaf
    train_step: Callable  # jitted: (state, batch) -> (state, metrics)
    rows_per_host: int


def build_train_step(
    model_config: ModelConfig,
    optimizer_config: OptimizerConfig,
    mesh_config: MeshConfig,
    train_config: TrainConfig,
    devices: list | None = None,
) -> TrainProgram:
    """The mesh over `devices` (default: all of them), the model, the optimizer, the state's
    shardings and the jitted train step. Nothing is allocated: the state exists only as shapes."""
    mesh = sharding.make_mesh(mesh_config, devices)
    rows_per_host = sharding.host_batch_size(train_config.batch_size, mesh)
    if train_config.batch_size % (train_config.microbatches * mesh.shape["data"] * mesh.shape["fsdp"]):
        raise ConfigError(f"TrainConfig.batch_size {train_config.batch_size} does not split into "
                          f"{train_config.microbatches} microbatches over the mesh's batch shards")  # fmt: skip
    model = Decoder(model_config)
    tx = make_optimizer(optimizer_config, train_config.num_steps)
    schedule = learning_rate_schedule(optimizer_config, train_config.num_steps)
    # Shapes and axis names do not depend on the mesh; outside it, abstract_state's PRNG key stays on
    # the host even when the mesh's devices are compile-only (orca-compile).
    boxed = step_lib.abstract_state(model, tx)
    shardings = sharding.shardings_of(boxed, mesh)
    train_step = step_lib.jit_train_step(model, tx, schedule, shardings, mesh, train_config.microbatches)
    return TrainProgram(mesh, model, tx, boxed, shardings, train_step, rows_per_host)


def abstract_batch(batch_size: int, sequence_length: int, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes, dtypes and shardings of one global batch as the input pipeline delivers it."""
    spec = sharding.batch_sharding(mesh)
    batch = {name: jax.ShapeDtypeStruct((batch_size, sequence_length), np.int32, sharding=spec)
             for name in MODEL_FEATURES}  # fmt: skip
    batch["rejected"] = jax.ShapeDtypeStruct((batch_size, len(REJECT_REASONS)), np.int32, sharding=spec)
    return batch


class PreemptionWatch:
    """Notes SIGTERM; with several hosts, they agree every `check_every` steps so all stop together."""

    def __init__(self, check_every: int = 10):
        self.check_every = check_every
        self._requested = False
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._requested = True

    def requested(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self._requested
        if step % self.check_every:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.int32(self._requested))))

    def close(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def train(
    model_dir: str,
    model_config: ModelConfig,
    data_config: DataConfig,
    optimizer_config: OptimizerConfig = OptimizerConfig(),
    mesh_config: MeshConfig = MeshConfig(),
    train_config: TrainConfig = TrainConfig(),
    init_from: str = "",
    init_optimizer: bool = False,
) -> dict[str, float]:
    """Trains to `train_config.num_steps`, resuming from MODEL_DIR's latest checkpoint if there is one.

    A new run starts from the parameters in `init_from` (an orca_jax run or export, an
    `orca-import-hf` output, or a Hugging Face folder) when given, else from a random init; with
    `init_optimizer` it also takes that run's optimizer state (progressive learning "in full").
    Returns the metrics of the last log step."""
    check_vocabulary(model_config, data_config)
    program = build_train_step(model_config, optimizer_config, mesh_config, train_config)
    mesh, model, tx, rows_per_host = program.mesh, program.model, program.tx, program.rows_per_host
    total = train_config.num_steps
    checkpoints = Checkpoints(checkpoints_dir(model_dir), keep=train_config.keep_checkpoints or None,
                              keep_every=train_config.keep_every or None)  # fmt: skip
    start = checkpoints.latest_step() or 0
    if start < total and jax.process_index() == 0:
        clear_finished(model_dir)  # an evaluator following this run waits for its new steps
    # Reading every record once (strict: stop at the first bad one) and building the pipeline both
    # happen before anything is compiled.
    data_summary = "" if start else check_data(model_dir, data_config)
    feed = DataFeed(data_config, rows_per_host, seed=train_config.seed, data_shards=train_config.data_shards)
    if train_config.eval_every and not any(fs.files("validation")[0] for fs in data_config.sources):
        raise ConfigError("TrainConfig.eval_every is set but no FileSet has validation files or a holdout_fraction")
    meta = {
        "model": model_config.to_dict(),
        "data": data_config.to_dict(),
        "vocabulary": bundle.store_vocabulary(data_config.vocabulary, model_dir),
        "template": data_config.template,
        "added_tokens": list(data_config.added_tokens),
        "source": {"init_from": paths.absolute(init_from) if init_from else ""},
    }
    rejected = np.zeros(len(REJECT_REASONS), np.int64)  # records the pipeline dropped, per reason

    with sharding.use_mesh(mesh):
        boxed, shardings = program.boxed_state, program.shardings
        if start:
            print(f"resuming from {checkpoints.directory}/{start}", flush=True)
            state = checkpoints.restore_state(start, sharding.strip_axis_names(boxed), shardings)
            feed.restore(model_dir, start)
            saved = checkpoints.restore_meta(start)
            rejected += np.array([saved.get("rejected", {}).get(r, 0) for r in REJECT_REASONS])
            meta["source"] = saved.get("source", meta["source"])
        elif init_from:
            state, meta["source"] = start_from(init_from, init_optimizer, model_config, tx, boxed, shardings, mesh)
        else:
            state = step_lib.init_state(model, tx, train_config.seed, shardings)
        print(
            f"model: {model_config.num_params():,} parameters | mesh {dict(mesh.shape)} | "
            f"batch {train_config.batch_size} x {data_config.sequence_length} | steps {start}->{total}"
            + (f" | data: {data_summary}" if data_summary else ""),
            flush=True,
        )
        train_step = program.train_step
        eval_step = step_lib.jit_eval_step(model, shardings.params, mesh) if train_config.eval_every else None
        step_flops = flops.flops_per_token(model_config, data_config.sequence_length) * (
            train_config.batch_size * data_config.sequence_length)  # fmt: skip
        peak = flops.peak_flops_per_device()

        logger = MetricsLogger(model_dir, total_steps=total, start_step=start)
        watch = PreemptionWatch()
        pending, timed, waited, streak, last, last_step = [], 0, 0.0, 0, {}, start
        checked = counted = 0  # how many of `pending` were checked for non-finite / added to `rejected`
        last_time = time.time()
        try:
            for step in range(start, total):
                fetch_start = time.time()
                batch = sharding.global_batch(next(feed), mesh)
                waited += time.time() - fetch_start
                state, metrics = train_step(state, batch)
                pending.append(metrics)
                if step == start:  # throughput counts the steps after compilation
                    jax.block_until_ready(metrics)
                    print(f"first step (compilation included): {time.time() - last_time:.1f}s", flush=True)
                    last_time, waited = time.time(), 0.0
                else:
                    timed += 1
                done = step + 1
                preempted = watch.requested(done)
                checkpoint_now = done % train_config.checkpoint_every == 0 or done == total or preempted
                if checkpoint_now or done % train_config.log_every == 0 or done == total:
                    pending = jax.device_get(pending)
                    streak = check_finite(pending[checked:], streak, done, train_config.max_nonfinite, checkpoints)
                    checked = len(pending)
                    rejected += sum((m["rejected"] for m in pending[counted:]), np.zeros_like(rejected))
                    counted = len(pending)
                if checkpoint_now:
                    feed.save(model_dir, done)  # before the checkpoint that refers to it
                    checkpoints.save(done, state, {**meta, "rejected": rejected_counts(rejected)})
                    prune_data_states(model_dir, checkpoints.all_steps() + [done])
                if done % train_config.log_every == 0 or done == total or preempted:
                    seconds = time.time() - last_time
                    last = summarize(pending, timed, seconds, train_config, data_config)
                    if timed:
                        last["data_wait_fraction"] = waited / seconds
                        last["tflops_per_device"] = step_flops * timed / seconds / jax.device_count() / 1e12
                        if peak:
                            last["mfu"] = last["tflops_per_device"] * 1e12 / peak
                    last.update({f"data/rejected_{k}": float(v) for k, v in rejected_counts(rejected).items()})
                    logger.write(done, last, done - last_step)
                    pending, timed, waited, last_time, last_step = [], 0, 0.0, time.time(), done
                    checked = counted = 0
                if eval_step and (done % train_config.eval_every == 0 or done == total):
                    scores = validation_loss(
                        eval_step, state.params, mesh, data_config, rows_per_host, train_config.eval_batches
                    )
                    logger.write_validation(done, scores)
                    last_time = time.time()
                if preempted:
                    print(f"SIGTERM: saved step {done} in {checkpoints.directory}; run again to continue", flush=True)
                    break
        finally:
            watch.close()
            checkpoints.wait()
            saved_step = checkpoints.latest_step() or 0
            checkpoints.close()
            logger.close()
    if start >= total:
        print(f"{checkpoints.directory} already holds step {start} >= num_steps {total}: nothing to train", flush=True)
    elif jax.process_index() == 0 and saved_step >= total:
        mark_finished(model_dir, total)  # the final checkpoint is on disk (checkpoints.wait above)
    return last


def start_from(init_from, init_optimizer, model_config, tx, boxed, shardings, mesh):
    """The step-0 state of a run that starts from another run's (or an import's) parameters, and
    the source recorded in every checkpoint's meta."""
    source = bundle.load(init_from, mesh)
    check_same_model(model_config, source.config, init_from)
    record = {"init_from": paths.absolute(init_from), "step": source.step, "optimizer": init_optimizer}
    if not init_optimizer:
        print(f"starting from the parameters in {init_from} (step {source.step}), fresh optimizer", flush=True)
        return step_lib.state_from_params(tx, source.params, shardings, DTYPES[model_config.param_dtype]), record
    root, checkpoints = bundle.open_run(init_from)
    full = checkpoints.restore_state(source.step, sharding.strip_axis_names(boxed), shardings)
    checkpoints.close()
    print(f"starting from the full state of {root} (step {source.step}): parameters and optimizer", flush=True)
    return full.replace(step=jax.device_put(np.int32(0), shardings.step)), record


def check_finite(steps: list[dict], streak: int, done: int, limit: int, checkpoints: Checkpoints) -> int:
    """Counts consecutive skipped (non-finite) steps; `limit` in a row stop the run."""
    for m in steps:
        streak = streak + 1 if m["skipped"] else 0
        if streak >= limit:
            raise TrainingStopped(
                f"the loss or gradient was not finite for {streak} steps in a row (up to step {done}); no update "
                f"was applied for them, and the last checkpoint ({checkpoints.latest_step()}) holds the last good "
                "parameters. Lower the learning rate, or check the data around these steps."
            )
    return streak


def validation_loss(eval_step, params, mesh, data_config: DataConfig, rows: int, max_batches: int) -> dict[str, float]:
    totals = {"loss_sum": 0.0, "weight_sum": 0.0, "correct_sum": 0.0}
    batches = host_batches(data_config, "validation", rows, shuffle=False, seed=None, num_epochs=1,
                           shard_index=jax.process_index(), num_shards=jax.process_count())  # fmt: skip
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        sums = jax.device_get(eval_step(params, sharding.global_batch(batch, mesh)))
        totals = {k: totals[k] + float(sums[k]) for k in totals}
    weight = max(totals["weight_sum"], 1.0)
    return {"validation/loss": totals["loss_sum"] / weight, "validation/accuracy": totals["correct_sum"] / weight}


def summarize(
    steps: list[dict], timed: int, seconds: float, train_config: TrainConfig, data_config: DataConfig
) -> dict[str, float]:
    """Means over the steps since the last log; throughput over the last `timed` of them, which ran in
    `seconds` (none when the only step was the one that compiled)."""
    updated = [m for m in steps if not m["skipped"]] or steps  # a skipped step's loss may be NaN
    out = {k: float(np.mean([m[k] for m in updated])) for k in ("loss", "accuracy", "grad_norm")}
    out["learning_rate"] = float(steps[-1]["learning_rate"])
    out["skipped_steps"] = float(sum(m["skipped"] for m in steps))
    out["loss_tokens_per_step"] = float(np.mean([m["loss_tokens"] for m in steps]))
    out["examples_per_step"] = float(np.mean([m["examples"] for m in steps]))
    out["row_slots_per_step"] = float(train_config.batch_size * data_config.sequence_length)
    if timed:
        out["step_time"] = seconds / timed
        out["tokens_per_sec"] = float(sum(m["real_tokens"] for m in steps[-timed:])) / seconds
        out["row_slots_per_sec"] = timed * train_config.batch_size * data_config.sequence_length / seconds
    return out
