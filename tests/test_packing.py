"""The feature converter's worked example, feature by feature, and the task's loss weights."""

import json

import numpy as np
import pytest
import tensorflow as tf

from orca_jax.data import packing, tasks
from orca_jax.data.templates import get_template
from orca_jax.data.vocab import ByteVocabulary


def convert(examples, length, pack):
    ds = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={
            "targets": tf.TensorSpec([None], tf.int32),
            "roles": tf.TensorSpec([None], tf.int32),
        },
    )
    converter = packing.ExplanationFeatureConverter(pack=pack, bos_id=1)
    return list(converter(ds, packing.task_feature_lengths(length)).as_numpy_iterator())


DOCSTRING_EXAMPLES = [
    {"targets": [10, 11, 20, 21, 2], "roles": [1, 1, 2, 2, 2]},
    {"targets": [12, 22, 2], "roles": [1, 2, 2]},
]


def test_worked_example_packed_feature_by_feature():
    (row,) = convert(DOCSTRING_EXAMPLES, 10, pack=True)
    assert row["decoder_target_tokens"].tolist() == [10, 11, 20, 21, 2, 12, 22, 2, 0, 0]
    assert row["decoder_input_tokens"].tolist() == [1, 10, 11, 20, 21, 1, 12, 22, 0, 0]
    assert row["decoder_loss_weights"].tolist() == [0, 0, 1, 1, 1, 0, 1, 1, 0, 0]
    assert row["decoder_segment_ids"].tolist() == [1, 1, 1, 1, 1, 2, 2, 2, 0, 0]
    assert row["decoder_positions"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 0]
    assert set(row) == set(packing.MODEL_FEATURES)


def test_worked_example_unpacked():
    rows = convert(DOCSTRING_EXAMPLES, 6, pack=False)
    assert [r["decoder_target_tokens"].tolist() for r in rows] == [[10, 11, 20, 21, 2, 0], [12, 22, 2, 0, 0, 0]]
    assert [r["decoder_input_tokens"].tolist() for r in rows] == [[1, 10, 11, 20, 21, 0], [1, 12, 22, 0, 0, 0]]
    assert [r["decoder_loss_weights"].tolist() for r in rows] == [[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]]
    assert [r["decoder_segment_ids"].tolist() for r in rows] == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]
    assert [r["decoder_positions"].tolist() for r in rows] == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 0, 0]]


def test_examples_that_do_not_fit_start_a_new_row():
    rows = convert(DOCSTRING_EXAMPLES + [{"targets": [13, 14, 23, 2], "roles": [1, 1, 2, 2]}], 8, pack=True)
    assert [r["decoder_segment_ids"].max() for r in rows] == [2, 1]
    assert rows[1]["decoder_target_tokens"].tolist() == [13, 14, 23, 2, 0, 0, 0, 0]


@pytest.fixture()
def tiny_task(tmp_path):
    recs = [
        {"id": "a", "system_prompt": "Be brief.", "question": "What is 1 + 2?", "response": "So the answer is 3."},
        {"id": "b", "system_prompt": "", "question": "What is 40 + 2?", "response": "0+2=2. So the answer is 42."},
        {"id": "c", "system_prompt": "x" * 300, "question": "too long?", "response": "yes"},  # over 128 tokens
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    tasks.register_explanation_task("test_tiny", {"train": str(path)}, ByteVocabulary(), get_template("orca"))
    return recs


def test_task_weights_exactly_the_response_and_eos(tiny_task):
    vocab = ByteVocabulary()
    (batch,) = list(
        tasks.host_batches("test_tiny", "train", 128, 4, pack=False, shuffle=False, seed=None, num_epochs=1)
    )
    assert batch["decoder_target_tokens"].shape == (4, 128)
    # The over-long record is dropped rather than truncated; the batch is padded with empty rows.
    assert batch["decoder_segment_ids"].max(axis=1).tolist() == [1, 1, 0, 0]
    template = get_template("orca")
    for row, rec in zip(range(2), tiny_task[:2], strict=True):
        targets, weights = batch["decoder_target_tokens"][row], batch["decoder_loss_weights"][row]
        weighted = targets[weights == 1].tolist()
        assert weighted == vocab.encode(rec["response"]) + [vocab.eos_id]
        unweighted = targets[(weights == 0) & (targets != 0)].tolist()
        assert vocab.decode(unweighted) == template.prompt(rec["system_prompt"], rec["question"])
        assert batch["decoder_input_tokens"][row][0] == vocab.bos_id


def test_task_packs_both_examples_into_one_row(tiny_task):
    (batch,) = list(tasks.host_batches("test_tiny", "train", 256, 1, pack=True, shuffle=False, seed=None, num_epochs=1))
    segments = batch["decoder_segment_ids"][0]
    assert segments.max() == 2
    positions = batch["decoder_positions"][0]
    assert positions[segments == 2][0] == 0  # positions restart for the second example
    np.testing.assert_array_equal(batch["decoder_loss_weights"][0][segments == 0], 0)


def test_byte_vocabulary_layout():
    vocab = ByteVocabulary()
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.vocab_size) == (0, 1, 2, 3, 260)
    ids = vocab.encode("Aé")
    assert ids == [ord("A") + 4, 0xC3 + 4, 0xA9 + 4] and 0 not in ids
    assert vocab.decode(ids + [vocab.eos_id, 50]) == "Aé"
    assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == "Aé"
