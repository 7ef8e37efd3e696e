"""Orbax checkpoints of the train state, plus a JSON description of the run that made them.

Layout: `MODEL_DIR/checkpoints/<step>/` with three items:
    params     the parameters (what eval and export restore)
    opt_state  the optimizer state (what resuming training also restores)
    meta       JSON: the step, the model config, the data config (vocabulary, template, row length)
When a run has taken its last step, `MODEL_DIR/training_finished.json` says so (with that step):
an evaluator that follows the run (`orca-eval` with steps='all') stops once it has evaluated it.
Orbax writes a step into a temporary folder and renames it when complete, so a run killed mid-save
leaves no half-written step behind that `latest_step` would pick up.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import tensorflow as tf

from orca_jax import paths
from orca_jax.errors import CheckpointError

ITEMS = ("params", "opt_state", "meta")


def checkpoints_dir(model_dir: str) -> str:
    return os.path.join(paths.absolute(model_dir), "checkpoints")


FINISHED_FILE = "training_finished.json"


def mark_finished(model_dir: str, step: int) -> None:
    paths.write_text(os.path.join(paths.absolute(model_dir), FINISHED_FILE), json.dumps({"step": step}) + "\n")


def clear_finished(model_dir: str) -> None:
    """A run that starts (or resumes with more steps) is not finished until it says so again."""
    path = os.path.join(paths.absolute(model_dir), FINISHED_FILE)
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def finished_step(model_dir: str) -> int | None:
    """The final step of a run that has finished, else None."""
    path = os.path.join(paths.absolute(model_dir), FINISHED_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return int(json.loads(f.read())["step"])


def use_coordination_service_barriers() -> None:
    """Orbax's barriers through the coordination service instead of a device collective. By default
    Orbax (0.12) syncs processes with a psum over all devices, and an asynchronous save runs some of
    those from a background thread: on CPU (gloo) such a collective can interleave with the train
    step's own, which pairs mismatched messages between processes and aborts them. The flag is an
    absl flag; the binaries parse their own flags, so absl's are marked parsed (at their defaults)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    flags.FLAGS.experimental_orbax_use_distributed_barrier = True


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Checkpoints:
    """Keeps the newest `keep` checkpoints (all when None) plus every step that is a multiple of
    `keep_every`; restores by step."""

    def __init__(self, directory: str, *, keep: int | None = None, keep_every: int | None = None, create: bool = True):
        self.directory = directory
        if jax.process_count() > 1:
            use_coordination_service_barriers()
        if not create and not tf.io.gfile.isdir(directory):
            raise CheckpointError(f"{directory}: no checkpoints folder (is this a MODEL_DIR that orca-train wrote?)")
        self._manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, keep_period=keep_every, create=create, enable_async_checkpointing=True
            ),
            item_names=ITEMS,
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def latest_on_disk(self) -> str:
        """The newest committed checkpoint's folder, read from the directory listing alone (no
        coordination with other processes, so it answers after a peer has died); "" when none.
        Orbax writes into a temporary name and renames to the bare step number when complete."""
        names = tf.io.gfile.listdir(self.directory) if tf.io.gfile.isdir(self.directory) else []
        steps = [int(n.rstrip("/")) for n in names if n.rstrip("/").isdigit()]
        return os.path.join(self.directory, str(max(steps))) if steps else ""

    def resolve_step(self, step: int | None) -> int:
        """`step`, or the latest when None; an error naming the folder when it does not exist."""
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: holds no complete checkpoint")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"{self.directory}: no checkpoint at step {step} (there are {steps})")
        return step

    def save(self, step: int, state, meta: dict[str, Any]) -> bool:
        """Starts an asynchronous save of the train state at `step`."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                opt_state=ocp.args.StandardSave(state.opt_state),
                meta=ocp.args.JsonSave({**meta, "step": step}),
            ),
            force=True,  # the trainer decides when to save
        )

    def save_params(self, step: int, params, meta: dict[str, Any]) -> None:
        """Saves parameters and meta only (imports and exports), and waits until they are written."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave({**meta, "step": step})
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_params(self, step: int, abstract_params, shardings=None) -> Any:
        """The parameters at `step`, placed with `shardings` (any mesh, not only the saving one);
        without shardings, as numpy arrays shaped like `abstract_params` (which may be numpy)."""
        target = abstract_params if shardings is None else _abstract(abstract_params, shardings)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{self.directory}/{step}: parameters do not match the model ({e})") from None
        return restored["params"]

    def restore_state(self, step: int, abstract_state, shardings):
        """The full train state at `step`, for resuming."""
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(_abstract(abstract_state.params, shardings.params)),
                    opt_state=ocp.args.StandardRestore(_abstract(abstract_state.opt_state, shardings.opt_state)),
                ),
            )
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{self.directory}/{step}: state does not match the model and optimizer ({e})"
            ) from None
        step_array = jax.device_put(jnp.asarray(step, jnp.int32), shardings.step)
        return abstract_state.replace(step=step_array, params=restored["params"], opt_state=restored["opt_state"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
