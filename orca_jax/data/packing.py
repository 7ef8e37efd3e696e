"""Packing: tokenized examples -> fixed-length decoder rows, with one token budget per row.

An example is one token stream `targets` (prompt tokens, response tokens, EOS) with a parallel
`roles` stream (1 on prompt tokens, 2 on response tokens and the EOS). Prompt and response share
the row's budget.

Worked example. Two examples, with BOS 1 and EOS 2, packed into a row of length 10:

    example 1: prompt [10, 11], response [20, 21]  ->  targets [10, 11, 20, 21, 2]  roles [1, 1, 2, 2, 2]
    example 2: prompt [12],     response [22]      ->  targets [12, 22, 2]          roles [1, 2, 2]

    decoder_target_tokens  [10, 11, 20, 21,  2, 12, 22,  2,  0,  0]   what the model must predict
    decoder_input_tokens   [ 1, 10, 11, 20, 21,  1, 12, 22,  0,  0]   targets shifted right, BOS per example
    decoder_loss_weights   [ 0,  0,  1,  1,  1,  0,  1,  1,  0,  0]   1 on response tokens and EOS only
    decoder_segment_ids    [ 1,  1,  1,  1,  1,  2,  2,  2,  0,  0]   which example; 0 is padding
    decoder_positions      [ 0,  1,  2,  3,  4,  0,  1,  2,  0,  0]   restart at 0 for every example

The model attends only within a segment, so a packed row computes exactly what its examples would
compute alone. Each row also carries `rejected` [R]: how many records the packer saw rejected, per
reason (see records.REJECT_REASONS), since the previous row, so the trainer can count them.

Modes, over a window of `window` consecutive examples:
    greedy    in arrival order, each example goes into the open row if it fits, else starts a new one
              (SeqIO's order).
    best_fit  longest first, each example goes into the open row with the least room that still
              fits it (best-fit decreasing), which leaves little padding.
    none      one example per row (evaluation).
"""

from __future__ import annotations

import bisect

import numpy as np
import tensorflow as tf

PROMPT_ROLE = 1
RESPONSE_ROLE = 2
MODES = ("best_fit", "greedy", "none")
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


def assign_rows(lengths: list[int], capacity: int, mode: str) -> list[list[int]]:
    """Example indices per row; examples of length 0 (rejected) are in no row."""
    order = [i for i in range(len(lengths)) if lengths[i] > 0]
    if mode == "none":
        return [[i] for i in order]
    if mode == "greedy":
        rows: list[list[int]] = []
        room = 0
        for i in order:
            if not rows or lengths[i] > room:
                rows.append([])
                room = capacity
            rows[-1].append(i)
            room -= lengths[i]
        return rows
    # Best-fit decreasing: `rooms` holds (room left, row) sorted, so the tightest fit is a bisection.
    rows, rooms = [], []
    for i in sorted(order, key=lambda i: -lengths[i]):
        at = bisect.bisect_left(rooms, (lengths[i], -1))
        if at == len(rooms):
            rows.append([i])
            bisect.insort(rooms, (capacity - lengths[i], len(rows) - 1))
        else:
            room, row = rooms.pop(at)
            rows[row].append(i)
            bisect.insort(rooms, (room - lengths[i], row))
    return rows


def pack_window(targets: list[np.ndarray], roles: list[np.ndarray], rejects: np.ndarray, capacity: int, mode: str,
                bos_id: int, num_reasons: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Rows for one window of examples; `rejects` holds each example's reason code (0: kept)."""
    lengths = [len(t) for t in targets]
    if any(n > capacity for n in lengths):
        raise ValueError(f"an example of {max(lengths)} tokens reached the packer for rows of {capacity}")
    rows = assign_rows(lengths, capacity, mode) or [[]]  # a window with nothing kept still reports its rejects
    out = {name: np.zeros((len(rows), capacity), np.int32) for name in MODEL_FEATURES}
    for r, members in enumerate(rows):
        at = 0
        for segment, i in enumerate(members, start=1):
            n = lengths[i]
            span = slice(at, at + n)
            out["decoder_target_tokens"][r, span] = targets[i]
            out["decoder_input_tokens"][r, span] = np.concatenate([[bos_id], targets[i][:-1]])
            out["decoder_loss_weights"][r, span] = roles[i] == RESPONSE_ROLE
            out["decoder_segment_ids"][r, span] = segment
            out["decoder_positions"][r, span] = np.arange(n)
            at += n
    rejected = np.zeros((len(rows), num_reasons), np.int32)
    codes = rejects[rejects > 0]
    np.add.at(rejected[0], codes - 1, 1)
    out["rejected"] = rejected
    return out


def pack_dataset(ds: tf.data.Dataset, capacity: int, *, mode: str, window: int, bos_id: int,
                 num_reasons: int) -> tf.data.Dataset:  # fmt: skip
    """Examples {targets, roles, reject} -> rows {the five decoder features, rejected}."""
    names = (*MODEL_FEATURES, "rejected")

    def pack(flat_targets, lengths, flat_roles, rejects):
        splits = np.cumsum(lengths)[:-1]
        out = pack_window(np.split(flat_targets, splits), np.split(flat_roles, splits), rejects, capacity, mode,
                          bos_id, num_reasons)  # fmt: skip
        return [out[name] for name in names]

    def pack_batch(batch):
        outputs = tf.numpy_function(
            pack, [batch["targets"].flat_values, batch["targets"].row_lengths(), batch["roles"].flat_values,
                   batch["reject"]], [tf.int32] * len(names), stateful=False,
        )  # fmt: skip
        shaped = {n: tf.ensure_shape(o, [None, capacity]) for n, o in zip(names[:-1], outputs, strict=False)}
        shaped["rejected"] = tf.ensure_shape(outputs[-1], [None, num_reasons])
        return tf.data.Dataset.from_tensor_slices(shaped)

    ds = ds.map(lambda ex: {"targets": ex["targets"], "roles": ex["roles"], "reject": ex["reject"]})
    return ds.ragged_batch(window).flat_map(pack_batch)
