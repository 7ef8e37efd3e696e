"""What the trainer reads: this host's rows of every global batch, and where their position is saved.

The training data is split into `data_shards` shards (by default one per host). Host p reads the
shards p*k ... p*k + k - 1 (k = shards / hosts) and puts their rows one after the other, so a
global batch is shard 0's rows, then shard 1's, ...: the same batches on 1 host or on 16, as long as
the number of shards stays the same. Each shard's position (shuffle buffers included) is saved
next to every checkpoint, in MODEL_DIR/data_state/<step>/shard_<j>-of-<n>/.

Records the pipeline dropped (policy 'skip') are counted per reason in each packed row's `rejected`
feature. The feed takes that feature off the batch and adds it up here, on the host: the count
never goes to the accelerator, and hosts sum theirs only when a log line or checkpoint needs it.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

from orca_jax import paths
from orca_jax.data.config import DataConfig
from orca_jax.data.pipeline import host_batches, rejected_counts
from orca_jax.data.records import REJECT_REASONS
from orca_jax.data.validation import validate_files
from orca_jax.errors import CheckpointError, ConfigError, DataError


class DataFeed:
    def __init__(self, config: DataConfig, rows_per_host: int, *, seed: int, data_shards: int = 0):
        hosts, host = jax.process_count(), jax.process_index()
        self.shards = data_shards or hosts
        if self.shards % hosts:
            raise ConfigError(f"TrainConfig.data_shards {self.shards} does not divide over {hosts} hosts")
        per_host = self.shards // hosts
        if rows_per_host % per_host:
            raise ConfigError(f"{rows_per_host} rows per host do not divide over {per_host} data shards per host")
        self.local = list(range(host * per_host, (host + 1) * per_host))
        self._streams = [
            host_batches(
                config,
                "train",
                rows_per_host // per_host,
                shuffle=True,
                seed=seed,
                num_epochs=None,
                shard_index=j,
                num_shards=self.shards,
            )  # fmt: skip
            for j in self.local
        ]
        self._rejected_before = np.zeros(len(REJECT_REASONS), np.int64)  # all hosts', up to the restored step
        self._rejected_here = np.zeros(len(REJECT_REASONS), np.int64)  # this host's, since this process started

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        """This host's rows of the next global batch: the model's features only."""
        parts = [next(s) for s in self._streams]
        batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        self._rejected_here += batch.pop("rejected").sum(axis=0)
        return batch

    def rejected(self) -> dict[str, int]:
        """Records dropped so far, per reason, over all hosts. With several hosts this is a collective:
        every host calls it at the same step (the trainer does, at log and checkpoint steps)."""
        here = self._rejected_here
        if jax.process_count() > 1:
            here = np.asarray(multihost_utils.process_allgather(here.astype(np.int32))).sum(axis=0)
        return rejected_counts(self._rejected_before + here)

    def _path(self, model_dir: str, step: int, shard: int) -> str:
        return os.path.join(model_dir, "data_state", str(step), f"shard_{shard:05d}-of-{self.shards:05d}", "iterator")

    def save(self, model_dir: str, step: int) -> None:
        for shard, stream in zip(self.local, self._streams, strict=True):
            stream.save(self._path(model_dir, step, shard))

    def restore(self, model_dir: str, step: int, rejected: dict[str, int] | None = None) -> None:
        """Every local shard's position at `step`; `rejected` is the count the checkpoint recorded."""
        self._rejected_before = np.array([(rejected or {}).get(r, 0) for r in REJECT_REASONS], np.int64)
        for shard, stream in zip(self.local, self._streams, strict=True):
            path = self._path(model_dir, step, shard)
            if not tf.io.gfile.exists(path + ".index"):
                folder = os.path.join(model_dir, "data_state", str(step))
                saved = tf.io.gfile.listdir(folder) if tf.io.gfile.isdir(folder) else []
                raise CheckpointError(
                    f"{path}: no data position for step {step} with {self.shards} data shards (saved: {saved}); "
                    "resume with the run's TrainConfig.data_shards"
                )
            stream.restore(path)


def prune_data_states(model_dir: str, keep_steps: list[int]) -> None:
    """Removes saved data positions of checkpoints Orbax no longer keeps (first host only)."""
    root = os.path.join(model_dir, "data_state")
    if jax.process_index() != 0 or not tf.io.gfile.isdir(root):
        return
    for name in tf.io.gfile.listdir(root):
        name = name.rstrip("/")
        if name.isdigit() and int(name) not in keep_steps:
            tf.io.gfile.rmtree(os.path.join(root, name))


def check_data(model_dir: str, config: DataConfig) -> str:
    """Validates the training records once, at a run's start, on the first host (strict: the first bad
    record stops every host; skip: MODEL_DIR/rejects.jsonl and data_report.json). A summary line."""
    message, summary = "", ""
    if jax.process_index() == 0:
        try:
            counts = validate_files(config, "train", os.path.join(model_dir, "rejects.jsonl"))
            report = {"records": dict(counts), "policy": config.policy}
            paths.write_text(os.path.join(model_dir, "data_report.json"), json.dumps(report, indent=1))
            bad = {k: v for k, v in counts.items() if k != "ok"}
            summary = f"{counts['ok']:,} valid records" + (f", skipped {bad} (see rejects.jsonl)" if bad else "")
        except DataError as e:
            message = str(e)
    if jax.process_count() > 1:
        failed = multihost_utils.broadcast_one_to_all(np.int32(bool(message)))
        if failed and not message:
            message = "the data failed validation on host 0 (its log names the record)"
    if message:
        raise DataError(message)
    return summary
