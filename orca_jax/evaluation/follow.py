"""Which checkpoints to evaluate, T5X-style: one step, the latest, or every one as training writes it.

    steps = 'latest'   the newest complete checkpoint, once
    steps = N          the checkpoint at step N
    steps = 'all'      every checkpoint not yet evaluated, oldest first, then waits for new ones until
                       training has written MODEL_DIR/training_finished.json and its final step is
                       evaluated (or `timeout_seconds` pass with nothing new)

A ledger, OUTPUT_DIR/ledger.json ({"evaluated": [steps]}), records each evaluated step after its
metrics file is written, so a restarted evaluator never evaluates a step twice. Orbax renames a
checkpoint into place only when it is complete, so a save in progress is never picked up. A
checkpoint that training deleted (keep_checkpoints) before its turn came is skipped and named.
On several hosts, the first decides the next step and tells the others, so all evaluate the same one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

from orca_jax import paths
from orca_jax.checkpoints import bundle
from orca_jax.checkpoints.store import finished_step
from orca_jax.errors import ConfigError

LEDGER = "ledger.json"
WAIT, STOP = -1, -2  # decisions that are not a step


def read_ledger(output_dir: str) -> list[int]:
    path = os.path.join(output_dir, LEDGER)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return sorted(json.loads(f.read())["evaluated"])


def add_to_ledger(output_dir: str, step: int) -> None:
    if jax.process_index() != 0:
        return
    steps = sorted(set(read_ledger(output_dir)) | {step})
    paths.write_text(os.path.join(output_dir, LEDGER), json.dumps({"evaluated": steps}) + "\n")


def checkpoint_steps(checkpoint_dir: str) -> list[int]:
    if bundle.is_hf_folder(checkpoint_dir):
        return [0]
    _, checkpoints = bundle.open_run(checkpoint_dir)
    steps = checkpoints.all_steps()
    checkpoints.close()
    return steps


def agree(step: int) -> int:
    """Process 0's `step`, on every process."""
    if jax.process_count() == 1:
        return step
    return int(multihost_utils.broadcast_one_to_all(np.int64(step)))


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


def follow(
    checkpoint_dir: str,
    steps: str | int,
    evaluate_step: Callable[[int | None], dict],
    output_dir: str,
    *,
    poll_seconds: float = 60.0,
    timeout_seconds: float = 0.0,
) -> list[dict]:
    """Calls `evaluate_step(step)` for each checkpoint that `steps` selects; returns their metrics.
    `evaluate_step(None)` means the latest, and fails clearly when there is none."""
    if isinstance(steps, int) and not isinstance(steps, bool):
        return [evaluate_step(steps)]
    if steps == "latest":
        found = checkpoint_steps(checkpoint_dir)
        return [evaluate_step(agree(found[-1]) if found else None)]
    if steps != "all":
        raise ConfigError(f"steps = {steps!r}; use 'latest', 'all' or a step number")
    results = []
    waited_since = time.time()
    while True:
        decision = agree(_next_decision(checkpoint_dir, output_dir, waited_since, timeout_seconds))
        if decision == STOP:
            return results
        if decision == WAIT:
            time.sleep(poll_seconds)
            continue
        if decision in checkpoint_steps(checkpoint_dir):
            results.append(evaluate_step(decision))
            add_to_ledger(output_dir, decision)
        else:
            _say(f"step {decision} was deleted before it could be evaluated (keep_checkpoints); skipped")
        waited_since = time.time()


def _next_decision(checkpoint_dir: str, output_dir: str, waited_since: float, timeout_seconds: float) -> int:
    """The oldest step not in the ledger; else STOP when training is finished (or the wait timed
    out), else WAIT."""
    done = set(read_ledger(output_dir))
    pending = [s for s in checkpoint_steps(checkpoint_dir) if s not in done]
    if pending:
        return pending[0]
    final = finished_step(checkpoint_dir)
    if final is not None and final in done:
        _say(f"training finished at step {final}, and every checkpoint is evaluated")
        return STOP
    if timeout_seconds and time.time() - waited_since > timeout_seconds:
        _say(f"no new checkpoint in {timeout_seconds:.0f} s and training has not marked the run finished; stopping")
        return STOP
    return WAIT
