"""SeqIO tasks over explanation-tuning records, and the per-host batch iterator.

A task reads OpenOrca-format JSONL (validated line by line, see `records.py`), renders each record
through a chat template, tokenizes the prompt and the response into one stream with a parallel
roles stream, and drops examples longer than the row. The feature converter in `packing.py` then
packs them into rows. Every host reads its own shard (SeqIO's `ShardInfo`), batches it, and the
trainer turns host batches into global arrays.
"""

from __future__ import annotations

import dataclasses
import logging
import string
from collections.abc import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from orca_jax.data import packing, records
from orca_jax.data.templates import ChatTemplate, get_template
from orca_jax.data.vocab import make_vocabulary

RECORD_FIELDS = ("id", "system_prompt", "question", "response")


class _NoUncachedSourceWarning(logging.Filter):
    """SeqIO warns that an uncached function source shuffles poorly on restarts; ours is shuffled after
    the source, and a restart replays the data order exactly, so the warning does not apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "uncached FunctionDataset" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoUncachedSourceWarning())


def keep_tensorflow_off_accelerators() -> None:
    """The input pipeline runs on the host: TensorFlow must not take GPU memory JAX needs."""
    tf.config.set_visible_devices([], "GPU")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to train on and how it becomes rows. Files: comma-separated paths or globs."""

    train_files: str
    validation_files: str = ""
    task_name: str = "explanations"
    vocabulary: str = "byte"  # `byte`, or a SentencePiece .model path
    template: str = "orca"
    sequence_length: int = 2048
    pack: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def register(self) -> seqio.Task:
        splits = {"train": self.train_files} if self.train_files else {}
        if self.validation_files:
            splits["validation"] = self.validation_files
        return register_explanation_task(
            self.task_name, splits, make_vocabulary(self.vocabulary), get_template(self.template)
        )


def jsonl_source(split_files: Mapping[str, str]) -> seqio.DataSource:
    """A SeqIO source over JSONL files per split (comma-separated paths or globs).

    Files are read and validated in Python when the dataset is built, so a missing file or a bad
    line fails before any step runs, with `file:line: field: reason`. Records are held in host
    memory; the data issue adds streaming readers for corpora that do not fit.
    """
    split_files = dict(split_files)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # examples are shuffled after the source
        rows = records.read_records(split_files[split])
        return tf.data.Dataset.from_tensor_slices(
            {field: np.array([getattr(r, field) for r in rows], dtype=object) for field in RECORD_FIELDS}
        )

    return seqio.FunctionDataSource(dataset_fn, splits=list(split_files))


def render_template(template: ChatTemplate):
    """Preprocessor: {system_prompt, question, response} -> {prompt, response} strings."""
    parts = list(string.Formatter().parse(template.prompt_format))
    field_of = {"system": "system_prompt", "question": "question"}

    @seqio.map_over_dataset
    def render(ex):
        pieces = []
        for literal, field, _, _ in parts:
            if literal:
                pieces.append(tf.constant(literal))
            if field is not None:
                pieces.append(ex[field_of[field]])
        return {"prompt": tf.strings.join(pieces), "response": ex["response"]}

    return render


def tokenize_with_roles(ds: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """Preprocessor: prompt and response -> one `targets` stream (response ends in EOS) + `roles`."""
    vocab = output_features["targets"].vocabulary

    def tokenize(ex):
        prompt = vocab.encode_tf(ex["prompt"])
        response = tf.concat([vocab.encode_tf(ex["response"]), [vocab.eos_id]], axis=0)
        return {
            "targets": tf.concat([prompt, response], axis=0),
            "roles": tf.concat(
                [tf.fill(tf.shape(prompt), packing.PROMPT_ROLE), tf.fill(tf.shape(response), packing.RESPONSE_ROLE)],
                axis=0,
            ),
        }

    return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)


def drop_overlong(ds: tf.data.Dataset, sequence_length: Mapping[str, int]) -> tf.data.Dataset:
    """Preprocessor: drops examples that do not fit a row (truncating would cut the response)."""
    limit = sequence_length["targets"]
    return ds.filter(lambda ex: tf.size(ex["targets"]) <= limit)


def register_explanation_task(
    name: str, split_files: Mapping[str, str], vocabulary: seqio.Vocabulary, template: ChatTemplate
) -> seqio.Task:
    """Registers (or replaces) the SeqIO task `name` over the given JSONL files."""
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name,
        source=jsonl_source(split_files),
        preprocessors=[render_template(template), tokenize_with_roles, drop_overlong],
        output_features={
            "targets": seqio.Feature(vocabulary, add_eos=False),
            "roles": seqio.Feature(seqio.PassThroughVocabulary(3), add_eos=False),
        },
    )


def host_batches(
    task_name: str,
    split: str,
    sequence_length: int,
    batch_size: int,
    *,
    pack: bool,
    shuffle: bool,
    seed: int | None,
    num_epochs: int | None,
    shard_index: int = 0,
    num_shards: int = 1,
    bos_id: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """This host's batches of decoder rows, as numpy arrays of shape [batch_size, sequence_length].

    With `num_epochs=None` the stream repeats forever (training). Otherwise the last batch is padded
    with all-zero rows, which carry no loss weight and no segment, so evaluation sees every example.
    """
    ds = seqio.get_dataset(
        task_name,
        packing.task_feature_lengths(sequence_length),
        packing.ExplanationFeatureConverter(pack=pack, bos_id=bos_id),
        dataset_split=split,
        shuffle=shuffle,
        seed=seed,
        num_epochs=num_epochs,
        shard_info=seqio.ShardInfo(index=shard_index, num_shards=num_shards),
        use_cached=False,
    )
    ds = ds.batch(batch_size, drop_remainder=num_epochs is None).prefetch(2)

    def numpy_batches():
        for batch in ds.as_numpy_iterator():
            n = next(iter(batch.values())).shape[0]
            if n < batch_size:
                batch = {k: np.pad(v, [(0, batch_size - n), (0, 0)]) for k, v in batch.items()}
            yield batch

    return numpy_batches()  # the files were read above, so a data error surfaces before training starts
