"""The data and length of a fine-tuning run (configs/runs/finetune.gin): any data config, in the base
model's own tokenizer and chat template, for a number of steps or of epochs."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from orca_jax.data import stats
from orca_jax.data.config import DataConfig
from orca_jax.errors import ConfigError


def finetune_data(data: DataConfig, vocabulary: str, template: str, added_tokens: Sequence[str] = ()) -> DataConfig:
    """`data` (from finetune.gin's own defaults or a layered configs/data/*.gin) with the base model's
    vocabulary, template and added tokens, whatever the data config chose for a run from scratch
    (Orca's data configs add `<pad>`, which a base model's embedding has no row for)."""
    if not any(fs.train for fs in data.sources):
        raise ConfigError("no training data: set --gin.TRAIN_FILES=your.jsonl, or layer a configs/data/*.gin")
    return dataclasses.replace(data, vocabulary=vocabulary, template=template, added_tokens=tuple(added_tokens))


def finetune_steps(data_config: DataConfig, batch_size: int, num_steps: int = 0, epochs: float = 0.0) -> int:
    """`num_steps` when given, else the steps that read the training data `epochs` times: its packed
    rows (counted by reading every record once, as `orca-data stats` does) over `batch_size`."""
    if num_steps > 0:
        return num_steps
    if epochs <= 0:
        raise ConfigError("finetune: set NUM_STEPS or EPOCHS (both are 0)")
    rows = stats.compute_stats(data_config, "train").rows
    if not rows:
        raise ConfigError("finetune: the training data has no example that fits a row; nothing to train on")
    steps = math.ceil(epochs * rows / batch_size)
    print(f"{epochs:g} epochs of {rows} rows at {batch_size} rows per step: {steps} steps", flush=True)
    return steps
