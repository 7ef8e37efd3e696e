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
    return packing.pack_window(targets, roles, rejects, capacity, mode, bos_id=1, num_reasons=3)


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
    assert packing.assign_rows(lengths, 8, "greedy") == [[0], [1], [2, 3], [4]]
    assert packing.assign_rows(lengths, 8, "best_fit") == [[0, 4], [1, 3], [2]]


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
