"""Packing: the worked example feature by feature, both packers, and properties on random records."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca_jax.data import packing

DOCSTRING_EXAMPLES = [  # (targets, roles)
    ([10, 11, 20, 21, 2], [1, 1, 2, 2, 2]),
    ([12, 22, 2], [1, 2, 2]),
]


def pack(examples, capacity, mode, rejects=None):
    targets = [np.array(t, np.int32) for t, _ in examples]
    roles = [np.array(r, np.int32) for _, r in examples]
    rejects = np.zeros(len(examples), np.int32) if rejects is None else np.array(rejects, np.int32)
    rows, carry = packing.pack_window(targets, roles, rejects, capacity, mode, bos_id=1, num_reasons=3)
    assert carry == []  # the last window carries nothing
    return rows


@pytest.mark.parametrize("mode", ["greedy", "best_fit"])
def test_worked_example_feature_by_feature(mode):
    row = {k: v[0].tolist() for k, v in pack(DOCSTRING_EXAMPLES, 10, mode).items()}
    assert row["decoder_target_tokens"] == [10, 11, 20, 21, 2, 12, 22, 2, 0, 0]
    assert row["decoder_input_tokens"] == [1, 10, 11, 20, 21, 1, 12, 22, 0, 0]
    assert row["decoder_loss_weights"] == [0, 0, 1, 1, 1, 0, 1, 1, 0, 0]
    assert row["decoder_segment_ids"] == [1, 1, 1, 1, 1, 2, 2, 2, 0, 0]
    assert row["decoder_positions"] == [0, 1, 2, 3, 4, 0, 1, 2, 0, 0]
    assert row["rejected"] == [0, 0, 0]


def test_unpacked_rows_hold_one_example_each():
    rows = pack(DOCSTRING_EXAMPLES, 6, "none")
    assert rows["decoder_target_tokens"].tolist() == [[10, 11, 20, 21, 2, 0], [12, 22, 2, 0, 0, 0]]
    assert rows["decoder_input_tokens"].tolist() == [[1, 10, 11, 20, 21, 0], [1, 12, 22, 0, 0, 0]]
    assert rows["decoder_segment_ids"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]


def test_greedy_keeps_order_and_best_fit_fills_gaps():
    lengths = [6, 5, 4, 3, 2]  # capacity 8
    assert packing.assign_rows(lengths, 8, "greedy") == ([[0], [1], [2, 3]], [[4]])  # the newest row stays open
    assert packing.assign_rows(lengths, 8, "best_fit") == ([[0, 4], [1, 3]], [[2]])  # room 4 >= the shortest, 2


def test_rejected_examples_are_counted_not_packed():
    examples = [*DOCSTRING_EXAMPLES, ([], []), ([], [])]
    rows = pack(examples, 10, "best_fit", rejects=[0, 0, 3, 1])
    assert rows["decoder_segment_ids"].shape == (1, 10)
    assert rows["rejected"].tolist() == [[1, 0, 1]]  # one of reason 1, one of reason 3
    only_rejects = pack([([], [])], 10, "greedy", rejects=[2])
    assert only_rejects["rejected"].tolist() == [[0, 1, 0]] and not only_rejects["decoder_segment_ids"].any()


records = st.lists(
    st.tuples(st.integers(1, 40), st.integers(1, 40)),  # (prompt tokens, response tokens)
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(records=records, capacity=st.integers(81, 200), mode=st.sampled_from(["greedy", "best_fit", "none"]))
def test_packing_properties(records, capacity, mode):
    """Every response token weighted exactly once, no prompt token weighted, nothing lost, duplicated or
    over budget, and positions and inputs right within every segment."""
    rng = np.random.default_rng(len(records) * capacity)
    examples, expected = [], []
    for k, (n_prompt, n_response) in enumerate(records):
        prompt = rng.integers(3, 1000, n_prompt) + 1000 * k  # token values name their example
        response = rng.integers(3, 1000, n_response) + 1000 * k
        examples.append((np.concatenate([prompt, response]), [1] * n_prompt + [2] * n_response))
        expected.append((prompt.tolist(), response.tolist()))
    rows = pack(examples, capacity, mode)
    got = []
    for r in range(rows["decoder_target_tokens"].shape[0]):
        segments = rows["decoder_segment_ids"][r]
        assert (segments > 0).sum() <= capacity
        for s in range(1, segments.max() + 1):
            at = segments == s
            targets = rows["decoder_target_tokens"][r][at]
            weights = rows["decoder_loss_weights"][r][at]
            assert rows["decoder_positions"][r][at].tolist() == list(range(at.sum()))
            assert rows["decoder_input_tokens"][r][at].tolist() == [1, *targets[:-1].tolist()]
            got.append((targets[weights == 0].tolist(), targets[weights == 1].tolist()))
        assert not rows["decoder_loss_weights"][r][segments == 0].any()
    assert sorted(got) == sorted(expected)


def example_stream(lengths, rejects=None):
    """A tf.data stream of examples whose tokens name them: example k is [1000k + 3, 1000k + 4, ...]."""
    import tensorflow as tf

    rejects = [0] * len(lengths) if rejects is None else rejects
    targets = [[1000 * k + 3 + j for j in range(n)] for k, n in enumerate(lengths)]
    roles = [[1] * (n // 2) + [2] * (n - n // 2) for n in lengths]
    ragged = lambda rows: tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=1)  # noqa: E731
    # From tensors, not a Python generator: the iterator's position can then be checkpointed.
    return tf.data.Dataset.from_tensor_slices(
        {"targets": ragged(targets), "roles": ragged(roles), "reject": tf.constant(rejects, tf.int32)}
    )


def packed_rows(ds, capacity, mode, window):
    out = packing.pack_dataset(ds, capacity, mode=mode, window=window, bos_id=1, num_reasons=3)
    return [{k: v.numpy() for k, v in row.items()} for row in out]


def examples_in(rows):
    return sorted(
        int(row["decoder_target_tokens"][row["decoder_segment_ids"] == s][0]) // 1000
        for row in rows
        for s in range(1, row["decoder_segment_ids"].max() + 1)
    )


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=40), window=st.integers(1, 9),
       mode=st.sampled_from(["greedy", "best_fit", "none"]))  # fmt: skip
def test_stream_emits_every_example_once_in_as_many_rows_as_count_rows_says(lengths, window, mode):
    rows = packed_rows(example_stream(lengths), 32, mode, window)
    assert examples_in(rows) == list(range(len(lengths)))  # the last window's carry is flushed
    assert len(rows) == packing.count_rows(lengths, 32, mode, window)  # orca-data stats agrees


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=2, max_size=60), mode=st.sampled_from(["greedy", "best_fit"]))
def test_carried_rows_are_emitted_by_the_next_window_and_never_make_more_rows(lengths, mode):
    half = len(lengths) // 2
    first, carry = packing.assign_rows(lengths[:half], 32, mode)
    carried_lengths = [lengths[i] for row in carry for i in row]
    second, carry_again = packing.assign_rows(carried_lengths + lengths[half:], 32, mode, packing.renumber(carry))
    emitted = {i for row in second for i in row}
    assert all(i in emitted for row in packing.renumber(carry) for i in row)  # waited one window at most
    assert not any(i < len(carried_lengths) for row in carry_again for i in row)
    # Carrying never costs a row: the two windows together need no more rows than packed apart.
    apart = sum(
        len(e) + len(c) for e, c in (packing.assign_rows(w, 32, mode) for w in (lengths[:half], lengths[half:]))
    )
    assert len(first) + len(second) + len(carry_again) <= apart


def test_carry_fills_the_rows_a_window_would_leave_part_full():
    # Windows of 3: each alone would close a row holding a single 10 (capacity 32).
    lengths = [22, 10, 10, 22, 10, 10]
    apart = sum(len(e) + len(c) for e, c in (packing.assign_rows(lengths[i : i + 3], 32, "best_fit") for i in (0, 3)))
    assert apart == 4
    assert packing.count_rows(lengths, 32, "best_fit", window=3) == 3
    assert len(packed_rows(example_stream(lengths), 32, "best_fit", 3)) == 3


def test_rejects_are_reported_when_a_window_emits_no_row():
    # Window 1 keeps one short example (carried, so it emits nothing) and rejects one of reason 2.
    rows = packed_rows(example_stream([5, 0, 6], rejects=[0, 2, 0]), 32, "best_fit", 2)
    assert sum(row["rejected"] for row in rows).tolist() == [0, 1, 0]
    assert examples_in(rows) == [0, 2]


def test_iterator_checkpoint_keeps_the_carried_rows(tmp_path):
    import tensorflow as tf

    lengths = [int(n) for n in np.random.default_rng(0).integers(1, 30, 80)]
    ds = packing.pack_dataset(example_stream(lengths), 32, mode="best_fit", window=7, bos_id=1, num_reasons=3)
    straight = [row["decoder_target_tokens"].numpy().tolist() for row in ds]
    it = iter(ds)
    head = [next(it)["decoder_target_tokens"].numpy().tolist() for _ in range(10)]
    path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / "ckpt"))
    fresh = iter(ds)
    tf.train.Checkpoint(iterator=fresh).read(path).assert_consumed()
    assert head + [row["decoder_target_tokens"].numpy().tolist() for row in fresh] == straight
