"""The feature converter: tokenized examples -> fixed-length decoder rows, packed or padded.

A task yields, per example, one token stream `targets` (prompt tokens, response tokens, EOS) and a
parallel `roles` stream (1 on prompt tokens, 2 on response tokens and the EOS). Roles are never 0,
so SeqIO's packing, which treats 0 as padding, keeps them aligned with the tokens. Prompt and
response share one length budget (SeqIO's stock decoder converters would give each its own).

Worked example. Two examples, with BOS 1 and EOS 2, packed into a row of length 10:

    example 1: prompt [10, 11], response [20, 21]  ->  targets [10, 11, 20, 21, 2]  roles [1, 1, 2, 2, 2]
    example 2: prompt [12],     response [22]      ->  targets [12, 22, 2]          roles [1, 2, 2]

    decoder_target_tokens  [10, 11, 20, 21,  2, 12, 22,  2,  0,  0]   what the model must predict
    decoder_input_tokens   [ 1, 10, 11, 20, 21,  1, 12, 22,  0,  0]   targets shifted right, BOS per example
    decoder_loss_weights   [ 0,  0,  1,  1,  1,  0,  1,  1,  0,  0]   1 on response tokens and EOS only
    decoder_segment_ids    [ 1,  1,  1,  1,  1,  2,  2,  2,  0,  0]   which example; 0 is padding
    decoder_positions      [ 0,  1,  2,  3,  4,  0,  1,  2,  0,  0]   restart at 0 for every example

The model attends only within a segment, so a packed row computes exactly what its examples would
compute alone. Unpacked (`pack=False`, used for evaluation), each row holds one example, segment ids
are 1 on its tokens and positions count from 0.

Examples longer than the row are dropped before packing (see `tasks.drop_overlong`) rather than
truncated: SeqIO truncates from the right, which would cut the response and its EOS.
"""

from __future__ import annotations

import seqio
import tensorflow as tf

PROMPT_ROLE = 1
RESPONSE_ROLE = 2

MODEL_FEATURES = (
    "decoder_target_tokens",
    "decoder_input_tokens",
    "decoder_loss_weights",
    "decoder_segment_ids",
    "decoder_positions",
)


def task_feature_lengths(sequence_length: int) -> dict[str, int]:
    """The `task_feature_lengths` argument of `seqio.get_dataset` for a row of this length."""
    return {"targets": sequence_length, "roles": sequence_length}


class ExplanationFeatureConverter(seqio.FeatureConverter):
    """Packs (or pads) `targets` + `roles` into the five decoder features above."""

    TASK_FEATURES = {
        "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "roles": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES = {
        "decoder_target_tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "decoder_input_tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "decoder_loss_weights": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "decoder_segment_ids": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        "decoder_positions": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    PACKING_FEATURE_DTYPES = {"decoder_segment_ids": tf.int32, "decoder_positions": tf.int32}

    def __init__(self, pack: bool = True, bos_id: int = 1, **kwargs):
        super().__init__(pack=pack, bos_id=bos_id, **kwargs)

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: dict[str, int]) -> tf.data.Dataset:
        ds = self._pack_or_pad(ds, task_feature_lengths)

        def convert(features):
            targets = features["targets"]
            if self.pack:
                segment_ids = features["targets_segment_ids"]
                positions = features["targets_positions"]
            else:
                segment_ids = tf.cast(tf.not_equal(targets, 0), tf.int32)
                positions = tf.range(tf.size(targets), dtype=tf.int32) * segment_ids
            inputs = seqio.utils.make_autoregressive_inputs(
                targets, sequence_id=segment_ids if self.pack else None, bos_id=self.bos_id
            )
            return {
                "decoder_target_tokens": targets,
                # Padding stays 0 in the inputs too (the shift would carry a BOS or EOS into it).
                "decoder_input_tokens": inputs * tf.cast(segment_ids > 0, tf.int32),
                "decoder_loss_weights": tf.cast(tf.equal(features["roles"], RESPONSE_ROLE), tf.int32),
                "decoder_segment_ids": segment_ids,
                "decoder_positions": positions,
            }

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: dict[str, int]) -> dict[str, int]:
        length = task_feature_lengths["targets"]
        return {name: length for name in MODEL_FEATURES}
