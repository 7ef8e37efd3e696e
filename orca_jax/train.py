"""orca-train: train a decoder on explanation-tuning data, configured by gin.

    orca-train --gin_file=configs/runs/mini_orca.gin --gin.MODEL_DIR=/tmp/mini_orca

Writes the resolved config to MODEL_DIR/config.gin, then checkpoints, metrics.jsonl and TensorBoard
scalars. Run it again with the same MODEL_DIR to resume from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys

from orca_jax import gin_cli
from orca_jax.data.tasks import keep_tensorflow_off_accelerators
from orca_jax.errors import exit_on_user_error


def path_join(parts: list[str]) -> str:
    """For gin files: builds a path from a macro and a file name."""
    return os.path.join(*parts)


def configurables() -> dict:
    from orca_jax.data.tasks import DataConfig
    from orca_jax.model.config import ModelConfig
    from orca_jax.parallel.sharding import MeshConfig
    from orca_jax.training import trainer
    from orca_jax.training.optimizer import OptimizerConfig

    return {
        "train": trainer.train,
        "ModelConfig": ModelConfig,
        "DataConfig": DataConfig,
        "OptimizerConfig": OptimizerConfig,
        "MeshConfig": MeshConfig,
        "TrainConfig": trainer.TrainConfig,
        "path_join": path_join,
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="orca-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    gin_cli.add_gin_flags(parser)
    args, bindings = gin_cli.parse_flags(parser, sys.argv[1:] if argv is None else argv)
    registry = gin_cli.register(configurables())
    gin_cli.parse_gin(args.gin_file, bindings, args.gin_search_paths)
    model_dir = gin_cli.macro_value("MODEL_DIR")
    keep_tensorflow_off_accelerators()
    print(f"config written to {gin_cli.write_config(model_dir)}", flush=True)
    final = gin_cli.call_configured(registry["train"], "train")
    if final:
        print("final: " + " | ".join(f"{k} {v:.4g}" for k, v in final.items()), flush=True)
    print(f"model dir: {os.path.abspath(model_dir)}", flush=True)


if __name__ == "__main__":
    main()
