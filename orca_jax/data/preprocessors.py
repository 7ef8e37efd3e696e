"""The SeqIO preprocessors between a record dict (readers.py) and the packer (packing.py).

In order, per example:

    holdout_filter         keeps the held-out records (validation split) or the others (train), by id hash
    assign_system_message  the run's system-message policy (DataConfig.system_message)
    tokenize_with_roles    chat template + tokenizer + over-length policy -> one token stream

Layouts. Input (readers.py), scalar features:

    id, system_prompt, question, response, collection    tf.string ("" for a rejected record)
    reject                                               tf.int32: 0, or records.reason_code(reason)

Output of tokenize_with_roles, for a kept example with prompt tokens p1 p2 p3 and response r1 r2:

    targets   p1 p2 p3 r1 r2 EOS       roles     1  1  1  2  2  2      (packing.PROMPT_ROLE / RESPONSE_ROLE)

(a model's own template may add trailer tokens after EOS, role 1: ChatML's newline after <|im_end|>)
    reject    0

and for a rejected or over-length record: `targets` and `roles` empty, `reject` its reason code,
so the packer counts it in the next row's `rejected` feature rather than dropping it silently.
"""

from __future__ import annotations

import seqio
import tensorflow as tf

from orca_jax.data import packing, records
from orca_jax.data.config import DataConfig
from orca_jax.data.records import OrcaRecord
from orca_jax.data.templates import ChatTemplate

OVER_LENGTH = records.reason_code("over_length")


def holdout_filter(fraction: float, keep: bool):
    """Keeps the held-out records (`keep`) or all others, by a hash of the record id."""
    buckets = 1_000_000

    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        def held_out(ex):
            return tf.strings.to_hash_bucket_fast(ex["id"], buckets) < int(fraction * buckets)

        return ds.filter(held_out if keep else lambda ex: tf.logical_not(held_out(ex)))

    return preprocess


def assign_system_message(config: DataConfig, messages: dict[int, str] | None):
    """The system message each record trains with (the same function `orca-data stats` calls)."""

    def choose(record_id: bytes, question: bytes, given: bytes, collection: bytes) -> bytes:
        record = OrcaRecord(record_id.decode(), given.decode(), question.decode(), "", collection.decode())
        return config.system_message(record, messages).encode()

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
            # What a model's own template writes after EOS (ChatML's newline): no loss, and no tokens
            # at all for the built-in templates.
            trailer = vocab.encode_tf(template.trailer) if template.trailer else tf.zeros([0], tf.int32)
            if overlong == "trim_prompt":  # keep the prompt's end: the question and the reply header
                keep = tf.maximum(limit - tf.size(response) - tf.size(trailer), 0)
                prompt = prompt[tf.maximum(tf.size(prompt) - keep, 0) :]
            too_long = tf.size(prompt) + tf.size(response) + tf.size(trailer) > limit
            reject = tf.where(ex["reject"] > 0, ex["reject"], tf.where(too_long, OVER_LENGTH, 0))
            keep_example = tf.cast(tf.equal(reject, 0), tf.int32)
            n_prompt, n_response = tf.size(prompt) * keep_example, tf.size(response) * keep_example
            n_trailer = tf.size(trailer) * keep_example
            roles = [tf.fill([n], role) for n, role in ((n_prompt, packing.PROMPT_ROLE),
                     (n_response, packing.RESPONSE_ROLE), (n_trailer, packing.PROMPT_ROLE))]  # fmt: skip
            return {
                "targets": tf.concat([prompt[:n_prompt], response[:n_response], trailer[:n_trailer]], axis=0),
                "roles": tf.concat(roles, axis=0),
                "reject": reject,
            }

        return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)

    return preprocess
