"""orca-eval: evaluate a checkpoint written by orca-train, configured by gin.

    orca-eval --gin_file=configs/runs/eval_mini.gin --gin.CHECKPOINT_DIR=/tmp/mini_orca

Restores the latest checkpoint (or --gin.evaluate.step=N), reports held-out loss on response tokens
and exact-match accuracy of greedy answers, and writes them as JSON into CHECKPOINT_DIR/eval/.
"""

from __future__ import annotations

import os

from orca_jax import gin_cli
from orca_jax.data.tasks import keep_tensorflow_off_accelerators
from orca_jax.errors import exit_on_user_error


def configurables() -> dict:
    from orca_jax.evaluation import evaluator
    from orca_jax.parallel.sharding import MeshConfig

    return {"evaluate": evaluator.evaluate, "MeshConfig": MeshConfig}


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    registry = gin_cli.configure("orca-eval", __doc__, configurables(), argv)
    checkpoint_dir = gin_cli.macro_value("CHECKPOINT_DIR")
    keep_tensorflow_off_accelerators()
    metrics = gin_cli.call_configured(registry["evaluate"], "evaluate")
    step = int(metrics["step"])
    width = max(len(k) for k in metrics)
    print(f"evaluation of {os.path.abspath(checkpoint_dir)} at step {step}:")
    for name, value in metrics.items():
        print(f"  {name:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {name:<{width}}  {value}")
    print(f"metrics: {os.path.join(os.path.abspath(checkpoint_dir), 'eval', f'metrics_step_{step}.json')}", flush=True)


if __name__ == "__main__":
    main()
