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

A window's rows that still have room for its shortest example are not emitted with it: they are
carried into the next window, which fills them further and emits them (assign_rows). Without the
carry every window's last rows went out part-full.
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


def assign_rows(lengths: list[int], capacity: int, mode: str, carried: list[list[int]] = ()
                ) -> tuple[list[list[int]], list[list[int]]]:  # fmt: skip
    """(rows to emit, rows to carry into the next window), as example indices; examples of length 0
    (rejected) are in no row.

    `carried` are the rows the previous window left open, as indices into `lengths` (its examples
    come first in the window). This window fills them further and emits them whatever their fill,
    so no example waits more than one window. Of its own open rows (best_fit: all; greedy: the
    newest) it carries those with room left for its shortest example. Without the carry, the last
    rows of every window left part-full cost 0.6% of all row slots at the default window on
    OpenOrca-like lengths (BENCHMARKS.md)."""
    in_carried = {i for row in carried for i in row}
    order = [i for i in range(len(lengths)) if lengths[i] > 0 and i not in in_carried]
    if mode == "none":
        return [[i] for i in order], []
    rows = [list(row) for row in carried]
    rooms = [capacity - sum(lengths[i] for i in row) for row in rows]
    if mode == "greedy":  # in arrival order; only the newest row is open
        for i in order:
            if not rows or lengths[i] > rooms[-1]:
                rows.append([])
                rooms.append(capacity)
            rows[-1].append(i)
            rooms[-1] -= lengths[i]
    else:  # best-fit decreasing: `open_rooms` holds (room left, row) sorted, so the tightest fit is a bisection
        open_rooms = sorted((room, r) for r, room in enumerate(rooms))
        for i in sorted(order, key=lambda i: -lengths[i]):
            at = bisect.bisect_left(open_rooms, (lengths[i], -1))
            if at == len(open_rooms):
                rows.append([i])
                rooms.append(capacity - lengths[i])
                bisect.insort(open_rooms, (rooms[-1], len(rows) - 1))
            else:
                _, r = open_rooms.pop(at)
                rows[r].append(i)
                rooms[r] -= lengths[i]
                bisect.insort(open_rooms, (rooms[r], r))
    shortest = min((lengths[i] for i in order), default=capacity + 1)
    candidates = range(len(carried), len(rows))
    if mode == "greedy":
        candidates = candidates[-1:]
    carry = {r for r in candidates if rooms[r] >= shortest}
    return [row for r, row in enumerate(rows) if r not in carry], [rows[r] for r in sorted(carry)]


def count_rows(lengths: list[int], capacity: int, mode: str, window: int) -> int:
    """How many rows `pack_dataset` makes of examples of these lengths (orca-data stats, benchmarks)."""
    rows, carried_lengths, carried = 0, [], []
    for start in range(0, len(lengths), window):
        chunk = carried_lengths + list(lengths[start : start + window])
        emit, carry = assign_rows(chunk, capacity, mode, carried)
        rows += len(emit)
        carried_lengths, carried = [chunk[i] for row in carry for i in row], renumber(carry)
    return rows + len(carried)  # the stream's end emits what the last window carried


def renumber(carry: list[list[int]]) -> list[list[int]]:
    """Carried rows as the next window numbers them: their examples first, in row order, from 0."""
    sizes = np.cumsum([0] + [len(row) for row in carry])
    return [list(range(sizes[r], sizes[r + 1])) for r in range(len(carry))]


def pack_window(targets: list[np.ndarray], roles: list[np.ndarray], rejects: np.ndarray, capacity: int, mode: str,
                bos_id: int, num_reasons: int, carried: list[list[int]] = (), last: bool = True
                ) -> tuple[dict[str, np.ndarray], list[list[int]]]:  # fmt: skip
    """Rows for one window of examples, and the rows it carries into the next (as example indices;
    none when `last`). `rejects` holds each example's reason code (0: kept); `carried` as in
    assign_rows. The first row reports the window's rejects; a window that emits no row but saw
    rejects emits one empty row for them."""
    lengths = [len(t) for t in targets]
    if any(n > capacity for n in lengths):
        raise ValueError(f"an example of {max(lengths)} tokens reached the packer for rows of {capacity}")
    rows, carry = assign_rows(lengths, capacity, mode, carried)
    if last:
        rows, carry = rows + carry, []
    codes = rejects[rejects > 0]
    if not rows and len(codes):
        rows = [[]]
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
    if len(codes):
        np.add.at(rejected[0], codes - 1, 1)
    out["rejected"] = rejected
    return out, carry


def pack_dataset(ds: tf.data.Dataset, capacity: int, *, mode: str, window: int, bos_id: int,
                 num_reasons: int) -> tf.data.Dataset:  # fmt: skip
    """Examples {targets, roles, reject} -> rows {the five decoder features, rejected}.

    Windows of `window` examples go through one `tf.data` scan whose state is the rows a window
    carries into the next (their examples' tokens, roles, lengths and row numbers), so the state is
    part of the iterator's checkpoint. A final empty window marked `last` emits what the stream's
    last window carried."""
    names = (*MODEL_FEATURES, "rejected")

    def pack(c_targets, c_roles, c_lengths, c_rows, flat_targets, flat_roles, lengths, rejects, last):
        k = len(c_lengths)
        all_lengths = np.concatenate([c_lengths, lengths]).astype(np.int64)
        splits = np.cumsum(all_lengths)[:-1]
        targets = np.split(np.concatenate([c_targets, flat_targets]), splits)
        roles = np.split(np.concatenate([c_roles, flat_roles]), splits)
        carried = [list(np.flatnonzero(c_rows == r)) for r in np.unique(c_rows)]
        out, carry = pack_window(targets, roles, np.concatenate([np.zeros(k, np.int32), rejects]), capacity, mode,
                                 bos_id, num_reasons, carried, bool(last))  # fmt: skip
        kept = [i for row in carry for i in row]
        state = [
            np.concatenate([targets[i] for i in kept] or [np.zeros(0, np.int32)]).astype(np.int32),
            np.concatenate([roles[i] for i in kept] or [np.zeros(0, np.int32)]).astype(np.int32),
            np.array([len(targets[i]) for i in kept], np.int32),
            np.array([r for r, row in enumerate(carry) for _ in row], np.int32),
        ]
        return [out[name] for name in names] + state

    def step(state, window):
        outputs = tf.numpy_function(
            pack, [*state, window["targets"].flat_values, window["roles"].flat_values,
                   tf.cast(window["targets"].row_lengths(), tf.int32), window["reject"], window["last"]],
            [tf.int32] * (len(names) + 4), stateful=False,
        )  # fmt: skip
        rows = {n: tf.ensure_shape(o, [None, capacity]) for n, o in zip(names[:-1], outputs, strict=False)}
        rows["rejected"] = tf.ensure_shape(outputs[len(names) - 1], [None, num_reasons])
        return tuple(tf.ensure_shape(o, [None]) for o in outputs[len(names) :]), rows

    ds = ds.map(lambda ex: {"targets": ex["targets"], "roles": ex["roles"], "reject": ex["reject"]})
    windows = ds.ragged_batch(window).map(lambda w: {**w, "last": False})
    empty = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32), tf.zeros([0], tf.int64))
    end = tf.data.Dataset.from_tensors({"targets": empty, "roles": empty, "reject": tf.zeros([0], tf.int32),
                                        "last": True})  # fmt: skip
    nothing = tf.zeros([0], tf.int32)
    return windows.concatenate(end).scan((nothing,) * 4, step).flat_map(tf.data.Dataset.from_tensor_slices)
