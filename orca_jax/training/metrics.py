"""Where training metrics go: a progress line on stdout, TensorBoard scalars, and metrics.jsonl.

Only the first process writes. `metrics.jsonl` in MODEL_DIR holds one JSON object per log step,
with `step` and every metric at full precision; TensorBoard event files go to MODEL_DIR/tensorboard.
"""

from __future__ import annotations

import json
import os
import time

import jax
import tensorflow as tf

from orca_jax.console import format_duration


class MetricsLogger:
    """Writes metrics of the steps after `start_step`. Lines that a killed run logged past its last
    checkpoint are dropped from metrics.jsonl, so a resumed run's file reads like an unbroken run's."""

    def __init__(self, model_dir: str, *, total_steps: int, start_step: int = 0):
        self.total_steps = total_steps
        self.primary = jax.process_index() == 0
        self._start = time.time()
        self._steps_done = 0
        if self.primary:
            self._writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard", "train"))
            path = os.path.join(model_dir, "metrics.jsonl")
            kept = []
            if tf.io.gfile.exists(path):
                with tf.io.gfile.GFile(path) as f:
                    kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start_step]
            # Rewritten, not appended: object stores (gs://) have no append.
            self._jsonl = tf.io.gfile.GFile(path, "w")
            self._jsonl.write("".join(kept))

    def write(self, step: int, metrics: dict[str, float], steps_since_last: int) -> None:
        """Records `metrics` at `step`; `steps_since_last` steps ran since the previous call (for the ETA)."""
        self._steps_done += steps_since_last
        if not self.primary:
            return
        with self._writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(name, value)
        self._writer.flush()
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        elapsed = time.time() - self._start
        eta = elapsed / max(self._steps_done, 1) * (self.total_steps - step)
        shown = " | ".join(_format(k, v) for k, v in metrics.items() if k in _SHOWN)
        print(f"step {step}/{self.total_steps} | {shown} | ETA {format_duration(eta)}", flush=True)

    def write_validation(self, step: int, metrics: dict[str, float]) -> None:
        if not self.primary:
            return
        with self._writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(name, value)
        self._writer.flush()
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        print(f"step {step}/{self.total_steps} | " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)

    def close(self) -> None:
        if self.primary:
            self._writer.close()
            self._jsonl.close()


_SHOWN = ("loss", "accuracy", "learning_rate", "grad_norm", "tokens_per_sec", "step_time", "mfu")


def _format(name: str, value: float) -> str:
    if name == "tokens_per_sec":
        return f"{value:,.0f} tok/s"
    if name == "learning_rate":
        return f"lr {value:.2e}"
    if name == "step_time":
        return f"{value * 1000:.0f} ms/step"
    return f"{name} {value:.4f}"
