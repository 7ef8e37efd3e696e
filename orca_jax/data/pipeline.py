"""SeqIO tasks and mixtures over explanation-tuning files, and each host's stream of packed batches.

A `FileSet` becomes a SeqIO task, a `DataConfig` with several a mixture (config.py). Per example:

    read (readers.py: JSONL lines, parquet row groups, TFRecord) -> validate (records.py)
    -> system message -> chat template -> tokenize with roles -> over-length policy (preprocessors.py)
    -> shuffle -> pack into rows (packing.py) -> batch

Records that fail validation, and examples too long for a row, continue as empty examples with a
reason code, so that the packer counts them in each row's `rejected` feature and the trainer reports
them: no record disappears without a count. With the `strict` policy, validation.validate_files
stops at the first bad record before anything is built.

A host batch (`HostBatches`), [rows, sequence_length] each unless noted:

    decoder_target_tokens, decoder_input_tokens, decoder_loss_weights,
    decoder_segment_ids, decoder_positions                          (packing.py shows an example)
    rejected   [rows, len(REJECT_REASONS)]: records dropped per reason since the previous row

Each host reads its own shard (whole files when there are enough, else every n-th example), and
its iterator's position, shuffle buffer included, can be saved with a checkpoint and restored.
"""

from __future__ import annotations

import logging

import numpy as np
import seqio
import tensorflow as tf

from orca_jax.data import jinja_templates, packing, readers
from orca_jax.data.config import DataConfig, FileSet
from orca_jax.data.preprocessors import OVER_LENGTH, assign_system_message, holdout_filter, tokenize_with_roles
from orca_jax.data.records import REJECT_REASONS
from orca_jax.data.templates import ChatTemplate, get_template
from orca_jax.errors import ConfigError


def register_task(
    fs: FileSet, split: str, files: str, holdout: str, vocab: seqio.Vocabulary, template: ChatTemplate,
    config: DataConfig, messages: dict[int, str] | None,
) -> seqio.Task:  # fmt: skip
    """Registers (or replaces) the SeqIO task `fs.name` for `split`."""
    if fs.name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(fs.name)
    if files.startswith("tfds:"):
        from orca_jax.data import tfds_builder  # noqa: F401  (registers the builder with TFDS)

        name = files[len("tfds:") :]
        source = seqio.TfdsDataSource(name if ":" in name else f"{name}:1.0.0", tfds_data_dir=fs.tfds_data_dir or None)
        from_tfds = [seqio.map_over_dataset(lambda ex: {**ex, "reject": tf.constant(0, tf.int32)})]
    else:
        source, from_tfds = readers.file_source(files, fs.format, split), []
    return seqio.TaskRegistry.add(
        fs.name,
        source=source,
        preprocessors=[
            *from_tfds,
            *([holdout_filter(fs.holdout_fraction, keep=holdout == "keep")] if holdout else []),
            assign_system_message(config, messages),
            tokenize_with_roles(template, config.overlong),
        ],
        output_features={
            "targets": seqio.Feature(vocab, add_eos=False),
            "roles": seqio.Feature(seqio.PassThroughVocabulary(3), add_eos=False),
            # Declared so that mixtures keep it: 0, or why the record became an empty example.
            "reject": seqio.Feature(seqio.PassThroughVocabulary(OVER_LENGTH + 1), add_eos=False, rank=0),
        },
    )


def register(config: DataConfig, split: str = "train") -> str:
    """Registers the tasks (and the mixture) whose `split` is set; returns the name to read."""
    vocab = config.make_vocabulary()
    template = get_template(config.template)
    if jinja_templates.is_spec(config.template):  # here, not in DataConfig: a stored config names files
        jinja_templates.check_vocabulary(config.template, config.vocabulary, vocab)
    messages = config.read_messages()
    names = []
    for fs in config.sources:
        files, holdout = fs.files(split)
        if files:
            register_task(fs, split, files, holdout, vocab, template, config, messages)
            names.append((fs.name, fs.rate))
    if not names:
        raise ConfigError(f"DataConfig: no source has {split} files")
    if len(config.sources) == 1:
        return names[0][0]
    if config.name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(config.name)
    seqio.MixtureRegistry.add(config.name, names)
    return config.name


class HostBatches:
    """This host's batches: dicts of numpy arrays [rows, sequence_length] (and `rejected` [rows, R]).

    `save(path)` and `restore(path)` store the position in the stream (shuffle buffer included), so
    a resumed run sees exactly the batches an unbroken run would have."""

    def __init__(self, dataset: tf.data.Dataset, rows: int, pad_last: bool):
        self._iterator = iter(dataset)
        self._rows = rows
        self._pad_last = pad_last

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = {k: v.numpy() for k, v in next(self._iterator).items()}
        n = next(iter(batch.values())).shape[0]
        if self._pad_last and n < self._rows:
            batch = {k: np.pad(v, [(0, self._rows - n)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
        return batch

    def save(self, path: str) -> None:
        tf.train.Checkpoint(iterator=self._iterator).write(path)

    def restore(self, path: str) -> None:
        tf.train.Checkpoint(iterator=self._iterator).read(path).assert_consumed()


def host_batches(
    config: DataConfig, split: str, rows: int, *, shuffle: bool, seed: int | None, num_epochs: int | None,
    shard_index: int = 0, num_shards: int = 1, pack: bool = True,
) -> HostBatches:  # fmt: skip
    """This host's batches of `rows` rows. With `num_epochs=None` the stream repeats forever
    (training); otherwise the last batch is padded with empty rows, so evaluation sees every example.
    Building it registers the tasks and opens the files: a missing file fails here."""
    name = register(config, split)
    vocab = config.make_vocabulary()
    ds = seqio.get_dataset(
        name,
        packing.task_feature_lengths(config.sequence_length),
        seqio.PassThroughFeatureConverter(),
        dataset_split=split,
        shuffle=shuffle,
        seed=seed,
        num_epochs=num_epochs,
        shard_info=seqio.ShardInfo(index=shard_index, num_shards=num_shards),
        use_cached=False,
    )
    mode = config.packing if pack else "none"
    ds = packing.pack_dataset(ds, config.sequence_length, mode=mode, window=config.pack_window, bos_id=vocab.bos_id,
                              num_reasons=len(REJECT_REASONS))  # fmt: skip
    if shuffle:  # best-fit emits a window's rows longest first: mix them, or batches group by length
        ds = ds.shuffle(config.pack_window, seed=None if seed is None else seed + 1)
    ds = ds.batch(rows, drop_remainder=num_epochs is None).prefetch(2)
    options = tf.data.Options()
    # The readers and the packer run Python through numpy_function; they keep no state between
    # calls, so the iterator can be checkpointed without it.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return HostBatches(ds.with_options(options), rows, pad_last=num_epochs is not None)


def rejected_counts(totals: np.ndarray) -> dict[str, int]:
    """Per-reason counts from the summed `rejected` feature."""
    return {reason: int(n) for reason, n in zip(REJECT_REASONS, totals.tolist(), strict=True) if n}


class _NoUncachedSourceWarning(logging.Filter):
    """SeqIO warns that an uncached source shuffles poorly on restarts; a restart here restores the
    iterator's position and shuffle buffer exactly, so the warning does not apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "uncached" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoUncachedSourceWarning())


def keep_tensorflow_off_accelerators() -> None:
    """The input pipeline runs on the host: TensorFlow must not take GPU memory JAX needs."""
    tf.config.set_visible_devices([], "GPU")
