"""The training loop: build the mesh, the model and the data, resume or initialize, step, log, save.

`train(...)` is plain Python with explicit arguments; `orca_jax/cli/train.py` is the binary that fills
them from gin. Everything the run writes goes into MODEL_DIR:

    MODEL_DIR/config.gin            the resolved gin config (written by the binary)
    MODEL_DIR/checkpoints/<step>/   Orbax checkpoints (see checkpoints/store.py)
    MODEL_DIR/data_state/<step>/    each data shard's position at that checkpoint (see data_feed.py)
    MODEL_DIR/metrics.jsonl         one JSON object per log step (and per validation)
    MODEL_DIR/tensorboard/train/    TensorBoard scalars
    MODEL_DIR/data_report.json      records read at the start, valid and rejected per reason
    MODEL_DIR/rejects.jsonl         with policy 'skip': one line per rejected record, as `orca-data
                                    validate --rejects` writes it

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

from orca_jax import paths
from orca_jax.checkpoints import bundle
from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir, clear_finished, mark_finished
from orca_jax.data.config import DataConfig
from orca_jax.data.packing import MODEL_FEATURES
from orca_jax.errors import ConfigError, UserError
from orca_jax.evaluation import heldout
from orca_jax.model import flops
from orca_jax.model.config import DTYPES, RUNTIME_FIELDS, ModelConfig
from orca_jax.model.llama import Decoder
from orca_jax.parallel import distributed, sharding, topology
from orca_jax.parallel.sharding import MeshConfig
from orca_jax.training import step as step_lib
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
    if train_config.batch_size % (train_config.microbatches * sharding.batch_shards(mesh)):
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
    """Shapes, dtypes and shardings of one global batch as the train step receives it."""
    spec = sharding.batch_sharding(mesh)
    return {name: jax.ShapeDtypeStruct((batch_size, sequence_length), np.int32, sharding=spec)
            for name in MODEL_FEATURES}  # fmt: skip


class PreemptionWatch:
    """Notes SIGTERM; with several hosts, they agree every `check_every` steps so all stop together."""

    def __init__(self, check_every: int = 10):
        self.check_every = check_every
        self._requested = False
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._requested = True

    def requested(self, step: int, in_flight) -> bool:
        """Whether to stop after `step`. With several hosts, a collective every `check_every` steps, once
        `in_flight` (the step's outputs) is computed: a host collective that overlaps a running step's
        own collectives can pair mismatched messages between processes (gloo aborts on CPU)."""
        if jax.process_count() == 1:
            return self._requested
        if step % self.check_every:
            return False
        jax.block_until_ready(in_flight)
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
    checkpoints = Checkpoints(checkpoints_dir(model_dir), keep=train_config.keep_checkpoints or None,
                              keep_every=train_config.keep_every or None)  # fmt: skip
    start, total = checkpoints.latest_step() or 0, train_config.num_steps
    if start >= total:
        checkpoints.close()
        print(f"{checkpoints.directory} already holds step {start} >= num_steps {total}: nothing to train", flush=True)
        return {}
    check_vocabulary(model_config, data_config)
    program = build_train_step(model_config, optimizer_config, mesh_config, train_config)
    if jax.process_index() == 0:
        clear_finished(model_dir)  # an evaluator following this run waits for its new steps
    # Every record is read once (strict: stop at the first bad one) before anything is compiled.
    data_summary = "" if start else check_data(model_dir, data_config)
    feed = DataFeed(data_config, program.rows_per_host, seed=train_config.seed, data_shards=train_config.data_shards)
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
    with sharding.use_mesh(program.mesh):
        if start:
            state, meta["source"] = resume(program, checkpoints, feed, model_dir, start, meta["source"])
        elif init_from:
            state, meta["source"] = start_from(init_from, init_optimizer, model_config, program)
        else:
            state = step_lib.init_state(program.model, program.tx, train_config.seed, program.shardings)
        print(
            f"model: {model_config.num_params():,} parameters | mesh {dict(program.mesh.shape)} | "
            f"batch {train_config.batch_size} x {data_config.sequence_length} | steps {start}->{total}"
            + (f" | data: {data_summary}" if data_summary else ""),
            flush=True,
        )
        loop = TrainLoop(model_dir, program, feed, checkpoints, meta, model_config, data_config, train_config, start)
        # Where to resume, for the line a lost peer ends this process with (parallel/distributed.py).
        distributed.report_progress_with(lambda: (loop.done, checkpoints.latest_on_disk()))
        try:
            loop.run(state)
        except Exception as error:
            # A dead peer surfaces here as a failed collective; say so in one line and exit.
            distributed.exit_if_peer_lost(error, step=loop.done, resume_from=checkpoints.latest_on_disk())
            raise
        finally:
            loop.close()
            # Keep only the numbers: a reference to the loop would keep its data feed, and the tf.data
            # iterators in it, alive until interpreter shutdown, where destroying them can deadlock.
            final = (loop.done, checkpoints.latest_on_disk())
            distributed.report_progress_with(lambda: final)
    if jax.process_index() == 0 and loop.saved_step >= total:
        mark_finished(model_dir, total)  # the final checkpoint is on disk (loop.close waited for it)
    return loop.last


def resume(program: TrainProgram, checkpoints: Checkpoints, feed: DataFeed, model_dir: str, start: int, source):
    """The state, data position and dropped-record count at checkpoint `start`, and the run's source."""
    print(f"resuming from {checkpoints.directory}/{start}", flush=True)
    state = checkpoints.restore_state(start, sharding.strip_axis_names(program.boxed_state), program.shardings)
    saved = checkpoints.restore_meta(start)
    feed.restore(model_dir, start, saved.get("rejected", {}))
    return state, saved.get("source", source)


def start_from(init_from: str, init_optimizer: bool, model_config: ModelConfig, program: TrainProgram):
    """The step-0 state of a run that starts from another run's (or an import's) parameters, and
    the source recorded in every checkpoint's meta."""
    source = bundle.load(init_from, program.mesh)
    check_same_model(model_config, source.config, init_from)
    record = {"init_from": paths.absolute(init_from), "step": source.step, "optimizer": init_optimizer}
    shardings = program.shardings
    if not init_optimizer:
        print(f"starting from the parameters in {init_from} (step {source.step}), fresh optimizer", flush=True)
        state = step_lib.state_from_params(program.tx, source.params, shardings, DTYPES[model_config.param_dtype])
        return state, record
    root, checkpoints = bundle.open_run(init_from)
    full = checkpoints.restore_state(source.step, sharding.strip_axis_names(program.boxed_state), shardings)
    checkpoints.close()
    print(f"starting from the full state of {root} (step {source.step}): parameters and optimizer", flush=True)
    return full.replace(step=jax.device_put(np.int32(0), shardings.step)), record


@dataclasses.dataclass
class LogWindow:
    """The steps since the last log line: their metrics (device arrays until fetched), how many of them
    ran after compilation (`timed`) and since when, and how long they waited for data."""

    first_step: int
    metrics: list = dataclasses.field(default_factory=list)
    timed: int = 0
    started: float = dataclasses.field(default_factory=time.time)
    data_wait: float = 0.0
    checked: int = 0  # metrics already checked for non-finite values

    def restart_clock(self) -> None:
        self.started, self.data_wait = time.time(), 0.0


class TrainLoop:
    """The loop's state between steps: the current log window, the non-finite streak, the last log
    line's metrics and the last saved step. `run` reads as the sequence of what happens per step."""

    def __init__(self, model_dir: str, program: TrainProgram, feed: DataFeed, checkpoints: Checkpoints, meta: dict,
                 model_config: ModelConfig, data_config: DataConfig, config: TrainConfig, start: int):  # fmt: skip
        self.model_dir, self.program, self.feed, self.checkpoints = model_dir, program, feed, checkpoints
        self.meta, self.data_config, self.config = meta, data_config, config
        self.start, self.total, self.done, self.saved_step = start, config.num_steps, start, start
        self.window, self.streak, self.last = LogWindow(start), 0, {}
        self.logger = MetricsLogger(model_dir, total_steps=self.total, start_step=start)
        self.watch = PreemptionWatch()
        self.step_flops = flops.flops_per_token(model_config, data_config.sequence_length) * (
            config.batch_size * data_config.sequence_length)  # fmt: skip
        self.peak = topology.peak_flops_per_device()
        self.loss_step = (heldout.jit_loss_step(program.model, program.shardings.params, program.mesh)
                          if config.eval_every else None)  # fmt: skip

    def run(self, state: step_lib.TrainState) -> None:
        every = lambda n, done: done % n == 0 or done == self.total  # noqa: E731
        for step in range(self.start, self.total):
            state = self.step(state, step)
            done = self.done = step + 1
            preempted = self.watch.requested(done, in_flight=state)
            if every(self.config.checkpoint_every, done) or preempted:
                self.save(done, state)
            if every(self.config.log_every, done) or preempted:
                self.log(done)
            if self.loss_step and every(self.config.eval_every, done):
                self.validate(done, state.params)
            if preempted:
                print(f"SIGTERM: saved step {done} in {self.checkpoints.directory}; run again to continue", flush=True)
                break

    def step(self, state: step_lib.TrainState, step: int) -> step_lib.TrainState:
        fetch_start = time.time()
        batch = sharding.global_batch(next(self.feed), self.program.mesh)
        self.window.data_wait += time.time() - fetch_start
        state, metrics = self.program.train_step(state, batch)
        self.window.metrics.append(metrics)
        if step == self.start:  # throughput counts the steps after compilation
            jax.block_until_ready(metrics)
            print(f"first step (compilation included): {time.time() - self.window.started:.1f}s", flush=True)
            self.window.restart_clock()
        else:
            self.window.timed += 1
        return state

    def check_finite(self, done: int) -> None:
        """Fetches the window's metrics and counts consecutive skipped (non-finite) steps; `max_nonfinite`
        in a row stop the run."""
        window = self.window
        window.metrics = jax.device_get(window.metrics)
        for m in window.metrics[window.checked :]:
            self.streak = self.streak + 1 if m["skipped"] else 0
            if self.streak >= self.config.max_nonfinite:
                raise TrainingStopped(
                    f"the loss or gradient was not finite for {self.streak} steps in a row (up to step {done}); no "
                    f"update was applied for them, and the last checkpoint ({self.checkpoints.latest_step()}) holds "
                    "the last good parameters. Lower the learning rate, or check the data around these steps."
                )
        window.checked = len(window.metrics)

    def save(self, done: int, state: step_lib.TrainState) -> None:
        self.check_finite(done)  # a run that must stop does not save the steps that made it stop
        self.feed.save(self.model_dir, done)  # before the checkpoint that refers to it
        self.checkpoints.save(done, state, {**self.meta, "rejected": self.feed.rejected()})
        prune_data_states(self.model_dir, self.checkpoints.all_steps() + [done])
        self.saved_step = done

    def log(self, done: int) -> None:
        self.check_finite(done)
        window, seconds = self.window, time.time() - self.window.started
        last = summarize(window.metrics, window.timed, seconds, self.config, self.data_config)
        if window.timed:
            last["data_wait_fraction"] = window.data_wait / seconds
            last["tflops_per_device"] = self.step_flops * window.timed / seconds / jax.device_count() / 1e12
            if self.peak:
                last["mfu"] = last["tflops_per_device"] * 1e12 / self.peak
        last.update({f"data/rejected_{k}": float(v) for k, v in self.feed.rejected().items()})
        self.logger.write(done, last, done - window.first_step)
        self.window, self.last = LogWindow(done), last

    def validate(self, done: int, params) -> None:
        scores = heldout.response_loss(self.loss_step, params, self.program.mesh, self.data_config,
                                       self.program.rows_per_host, self.config.eval_batches)  # fmt: skip
        self.logger.write_validation(done, {"validation/loss": scores["loss"],
                                            "validation/accuracy": scores["token_accuracy"]})  # fmt: skip
        self.window.restart_clock()  # validation time is not training throughput

    def close(self) -> None:
        self.watch.close()
        self.checkpoints.wait()
        self.checkpoints.close()
        self.logger.close()


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
