"""SeqIO tasks and mixtures over explanation-tuning files, and each host's stream of packed batches.

A `FileSet` (files in one record format) becomes a SeqIO task; a `DataConfig` with several file sets
becomes a SeqIO mixture with their rates (progressive learning: stage 1 on ChatGPT responses,
stage 2 on GPT-4's). Per example, the pipeline is:

    read (TF-native: JSONL lines, parquet row groups, TFRecord) -> validate -> system message ->
    chat template -> tokenize into one stream with a roles stream -> over-length policy -> shuffle
    -> pack into rows (packing.py) -> batch

Records that fail validation, and examples too long for a row, continue as empty examples with a
reason code, so that the packer counts them in each row's `rejected` feature and the trainer reports
them: no record disappears without a count. With the `strict` policy, `validate_files` stops at the
first bad record before anything is built.

Each host reads its own shard (whole files when there are enough, else every n-th example), and
its iterator's position, shuffle buffer included, can be saved with a checkpoint and restored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter

import numpy as np
import seqio
import tensorflow as tf

from orca_jax.data import packing, records, system_messages
from orca_jax.data.templates import ChatTemplate, get_template
from orca_jax.data.vocab import make_vocabulary
from orca_jax.errors import ConfigError, DataError

REJECT_REASONS = (*records.REASONS, "over_length")  # a record's reason code is its index here + 1
OVER_LENGTH = len(REJECT_REASONS)
POLICIES = ("strict", "skip")
OVERLONG = ("drop", "trim_prompt")


@dataclasses.dataclass(frozen=True)
class FileSet:
    """One SeqIO task: files (comma-separated paths or globs) in one record format."""

    name: str
    train: str
    validation: str = ""
    format: str = "openorca"  # openorca | sharegpt
    rate: float = 1.0  # its share of a mixture
    # Without validation files, this fraction of the train files' records (chosen by a hash of the
    # record id, the same on every run and host) is the validation split and is never trained on.
    holdout_fraction: float = 0.0
    # `train = "tfds:orca_records/openorca"` reads a data set built by orca_jax.data.tfds_builder
    # (its own train and validation splits) from this folder.
    tfds_data_dir: str = ""

    def files(self, split: str) -> tuple[str, str]:
        """(files, holdout) for a split: holdout is "" (every record), "drop" or "keep" (the held-out ones)."""
        if self.train.startswith("tfds:"):
            return self.train, ""  # the TFDS data set has its own validation split
        if split == "validation" and not self.validation and self.holdout_fraction:
            return self.train, "keep"
        files = getattr(self, split)
        return files, ("drop" if split == "train" and self.holdout_fraction and not self.validation else "")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to train on and how it becomes rows."""

    sources: tuple[FileSet, ...]
    name: str = "explanations"  # the mixture's name when there are several sources
    vocabulary: str = "byte"  # byte | SentencePiece .model path | tokenizer.json path
    added_tokens: tuple[str, ...] = ()  # e.g. ("<pad>",) for Orca's 32,001 ids
    template: str = "orca"  # orca | chatml | llama2 | plain
    system_messages: str = "keep"  # keep | orca | erase (see system_messages.py)
    system_messages_file: str = ""  # your own wording of the 16 behaviours, JSON
    sequence_length: int = 2048
    packing: str = "best_fit"  # best_fit | greedy | none
    pack_window: int = 1000  # examples the packer sees at once
    overlong: str = "drop"  # drop | trim_prompt (cut the prompt from the left so the response fits)
    policy: str = "strict"  # strict: stop at the first bad record; skip: count it, log it, go on
    seed: int = 0  # system-message draws

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))  # gin passes lists
        object.__setattr__(self, "added_tokens", tuple(self.added_tokens))
        if not self.sources:
            raise ConfigError("DataConfig.sources: give at least one FileSet")
        for field, value, allowed in (("packing", self.packing, packing.MODES), ("overlong", self.overlong, OVERLONG),
                                      ("policy", self.policy, POLICIES),
                                      ("system_messages", self.system_messages, system_messages.MODES)):  # fmt: skip
            if value not in allowed:
                raise ConfigError(f"DataConfig.{field}: {value!r} is not one of {allowed}")
        get_template(self.template)

    @property
    def task_name(self) -> str:
        return self.sources[0].name if len(self.sources) == 1 else self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        d = dict(d)
        d["sources"] = tuple(FileSet(**s) for s in d["sources"])
        d["added_tokens"] = tuple(d.get("added_tokens", ()))
        return cls(**d)

    def make_vocabulary(self) -> seqio.Vocabulary:
        return make_vocabulary(self.vocabulary, self.added_tokens)

    def register(self, split: str = "train") -> str:
        """Registers the tasks (and the mixture) whose `split` is set; returns the name to read."""
        vocab = self.make_vocabulary()
        template = get_template(self.template)
        messages = system_messages.read_messages_file(self.system_messages_file) if self.system_messages_file else None
        names = []
        for fs in self.sources:
            files, holdout = fs.files(split)
            if files:
                register_task(fs, split, files, holdout, vocab, template, self, messages)
                names.append((fs.name, fs.rate))
        if not names:
            raise ConfigError(f"DataConfig: no source has {split} files")
        if len(self.sources) == 1:
            return names[0][0]
        if self.name in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.remove(self.name)
        seqio.MixtureRegistry.add(self.name, names)
        return self.name


# Reading files inside tf.data. Each reader yields dicts of the record's string fields plus `reject`.

_FIELDS = ("id", "system_prompt", "question", "response", "collection")
_OUT_TYPES = [tf.string] * len(_FIELDS) + [tf.int32]


def _as_outputs(items) -> list[np.ndarray]:
    columns = [[] for _ in range(len(_FIELDS) + 1)]
    for item in items:
        if isinstance(item, records.Rejection):
            values = [b""] * len(_FIELDS) + [REJECT_REASONS.index(item.reason) + 1]
        else:
            values = [getattr(item, f).encode("utf-8") for f in _FIELDS] + [0]
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return [np.array(c, dtype=object) for c in columns[:-1]] + [np.array(columns[-1], np.int32)]


def _to_dict(*tensors, shape=()) -> dict:
    """numpy_function outputs -> a record dict, with the static shapes tf.data needs."""
    return {k: tf.ensure_shape(t, shape) for k, t in zip((*_FIELDS, "reject"), tensors, strict=True)}


def _jsonl_reader(fmt: str):
    def parse(file: bytes, index: np.ndarray, line: bytes) -> list[np.ndarray]:
        fallback = f"{os.path.basename(file.decode())}:{int(index) + 1}"
        outputs = _as_outputs([records.record_from_line(line, fmt, fallback)])
        return [o[0] for o in outputs]

    def read(file: tf.Tensor) -> tf.data.Dataset:
        lines = tf.data.TextLineDataset(file).enumerate()
        lines = lines.filter(lambda i, line: tf.strings.length(tf.strings.strip(line)) > 0)
        return lines.map(lambda i, line: _to_dict(*tf.numpy_function(parse, [file, i, line], _OUT_TYPES,
                                                                     stateful=False)))  # fmt: skip

    return read


def _tfrecord_reader(fmt: str):
    def parse(file: bytes, index: np.ndarray, raw: bytes) -> list[np.ndarray]:
        example = tf.train.Example.FromString(raw)
        obj = {k: v.bytes_list.value[0].decode("utf-8", "replace") for k, v in example.features.feature.items()
               if len(v.bytes_list.value) == 1}  # fmt: skip
        fallback = f"{os.path.basename(file.decode())}:{int(index) + 1}"
        return [o[0] for o in _as_outputs([records.record_from_object(obj, fmt, fallback)])]

    def read(file: tf.Tensor) -> tf.data.Dataset:
        rows = tf.data.TFRecordDataset(file).enumerate()
        return rows.map(lambda i, raw: _to_dict(*tf.numpy_function(parse, [file, i, raw], _OUT_TYPES,
                                                                   stateful=False)))  # fmt: skip

    return read


def _parquet_reader(fmt: str, files: list[str]):
    groups = {f: records.open_parquet(f).num_row_groups for f in files}
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(list(groups), tf.constant(list(groups.values()), tf.int64)), -1
    )

    def read_group(file: bytes, group: np.ndarray) -> list[np.ndarray]:
        path = file.decode()
        parquet = records.open_parquet(path)
        first = sum(parquet.metadata.row_group(g).num_rows for g in range(int(group)))
        rows = parquet.read_row_group(int(group)).to_pylist()
        base = os.path.basename(path)
        return _as_outputs(
            records.record_from_object(obj, fmt, f"{base}:{first + i + 1}") for i, obj in enumerate(rows)
        )

    def read(file: tf.Tensor) -> tf.data.Dataset:
        groups_ds = tf.data.Dataset.range(table.lookup(file))
        columns = groups_ds.map(lambda g: tuple(tf.numpy_function(read_group, [file, g], _OUT_TYPES, stateful=False)))
        return columns.flat_map(lambda *c: tf.data.Dataset.from_tensor_slices(_to_dict(*c, shape=[None])))

    return read


def file_source(files: str, fmt: str, split: str) -> seqio.DataSource:
    paths = records.resolve_files(files)
    kinds = {records.file_type(p) for p in paths}
    if len(kinds) > 1:
        raise DataError(f"{files}: one file set must hold one file type, got {sorted(kinds)}")
    kind = kinds.pop()
    if fmt == "sharegpt" and kind != "jsonl":
        raise DataError(f"{files}: the sharegpt format is read from JSONL files only")
    reader = {"jsonl": lambda: _jsonl_reader(fmt), "tfrecord": lambda: _tfrecord_reader(fmt),
              "parquet": lambda: _parquet_reader(fmt, paths)}[kind]()  # fmt: skip
    return seqio.FileDataSource(read_file_fn=reader, split_to_filepattern={split: paths})


# Preprocessors.


def assign_system_message(config: DataConfig, messages: dict[int, str] | None):
    def choose(record_id: bytes, question: bytes, given: bytes, collection: bytes) -> bytes:
        return system_messages.system_message(
            record_id.decode(), question.decode(), given.decode(), mode=config.system_messages,
            collection=collection.decode(), seed=config.seed, messages=messages,
        ).encode()  # fmt: skip

    @seqio.map_over_dataset
    def assign(ex):
        if config.system_messages == "keep":
            return ex
        message = tf.numpy_function(choose, [ex["id"], ex["question"], ex["system_prompt"], ex["collection"]],
                                    tf.string, stateful=False)  # fmt: skip
        return {**ex, "system_prompt": tf.ensure_shape(message, [])}

    return assign


def tokenize_with_roles(template: ChatTemplate, overlong: str):
    """Prompt and response -> `targets` (prompt, response, EOS) and `roles`; records rejected earlier,
    or too long for the row, become empty examples that keep their reason code in `reject`."""

    def preprocess(ds: tf.data.Dataset, output_features, sequence_length) -> tf.data.Dataset:
        vocab = output_features["targets"].vocabulary
        limit = sequence_length["targets"]

        def tokenize(ex):
            prompt = vocab.encode_tf(template.prompt_tf(ex["system_prompt"], ex["question"]))
            response = tf.concat([vocab.encode_tf(template.response_tf(ex["response"])), [vocab.eos_id]], axis=0)
            if overlong == "trim_prompt":  # keep the prompt's end: the question and the reply header
                keep = tf.maximum(limit - tf.size(response), 0)
                prompt = prompt[tf.maximum(tf.size(prompt) - keep, 0) :]
            too_long = tf.size(prompt) + tf.size(response) > limit
            reject = tf.where(ex["reject"] > 0, ex["reject"], tf.where(too_long, OVER_LENGTH, 0))
            keep_example = tf.cast(tf.equal(reject, 0), tf.int32)
            n_prompt, n_response = tf.size(prompt) * keep_example, tf.size(response) * keep_example
            return {
                "targets": tf.concat([prompt[:n_prompt], response[:n_response]], axis=0),
                "roles": tf.concat(
                    [tf.fill([n_prompt], packing.PROMPT_ROLE), tf.fill([n_response], packing.RESPONSE_ROLE)], axis=0
                ),  # fmt: skip
                "reject": reject,
            }

        return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)

    return preprocess


def holdout_filter(fraction: float, keep: bool):
    """Preprocessor: keeps the held-out records (`keep`) or all others, by a hash of the record id."""
    buckets = 1_000_000

    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        def held_out(ex):
            return tf.strings.to_hash_bucket_fast(ex["id"], buckets) < int(fraction * buckets)

        return ds.filter(held_out if keep else lambda ex: tf.logical_not(held_out(ex)))

    return preprocess


def register_task(
    fs: FileSet, split: str, files: str, holdout: str, vocab: seqio.Vocabulary, template: ChatTemplate,
    config: DataConfig, messages: dict[int, str] | None,
) -> seqio.Task:  # fmt: skip
    """Registers (or replaces) the SeqIO task `fs.name` for `split`."""
    if fs.format not in records.FORMATS:
        raise ConfigError(f"FileSet {fs.name}: format {fs.format!r} is not one of {records.FORMATS}")
    if fs.name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(fs.name)
    if files.startswith("tfds:"):
        from orca_jax.data import tfds_builder  # noqa: F401  (registers the builder with TFDS)

        name = files[len("tfds:") :]
        source = seqio.TfdsDataSource(name if ":" in name else f"{name}:1.0.0", tfds_data_dir=fs.tfds_data_dir or None)
        from_tfds = [seqio.map_over_dataset(lambda ex: {**ex, "reject": tf.constant(0, tf.int32)})]
    else:
        source, from_tfds = file_source(files, fs.format, split), []
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


# Validation before training.


def validate_files(config: DataConfig, split: str, rejects_path: str = "") -> Counter:
    """Reads every record of `split` once. `strict`: the first bad one raises `file:line: field:
    reason`. `skip`: each bad line goes to `rejects_path` (JSONL: where, reason, field, detail)
    and the counts per reason come back."""
    counts: Counter = Counter()
    out = tf.io.gfile.GFile(rejects_path, "w") if rejects_path and config.policy == "skip" else None
    try:
        for fs in config.sources:
            files, _ = fs.files(split)
            for path in records.resolve_files(files) if files else []:
                for where, item in records.scan_file(path, fs.format):
                    if isinstance(item, records.Rejection):
                        if config.policy == "strict":
                            raise DataError(
                                item.message(where) + " (DataConfig.policy = 'skip' would count it and go on)"
                            )
                        counts[item.reason] += 1
                        if out:
                            out.write(json.dumps({"where": where, **dataclasses.asdict(item)}) + "\n")
                    else:
                        counts["ok"] += 1
    finally:
        if out:
            out.close()
    return counts


# The host's stream of batches.


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
    name = config.register(split)
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
