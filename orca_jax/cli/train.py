"""orca-train: train a decoder on explanation-tuning data, configured by gin.

    orca-train --gin_file=configs/runs/mini_orca.gin --gin.MODEL_DIR=/tmp/mini_orca

Writes the resolved config to MODEL_DIR/config.gin, then checkpoints, metrics.jsonl and TensorBoard
scalars. Run it again with the same MODEL_DIR to resume from the latest checkpoint.
"""

from __future__ import annotations

import os

from orca_jax.cli import gin_flags
from orca_jax.data.pipeline import keep_tensorflow_off_accelerators
from orca_jax.errors import exit_on_user_error


def configurables() -> dict:
    from orca_jax.checkpoints import base_model
    from orca_jax.data.config import DataConfig, FileSet
    from orca_jax.model.config import ModelConfig
    from orca_jax.parallel.sharding import MeshConfig
    from orca_jax.training import trainer
    from orca_jax.training.finetune import finetune_data, finetune_steps
    from orca_jax.training.optimizer import OptimizerConfig

    return {
        # configs/runs/finetune.gin: the model's shape, tokenizer and template from its BASE
        "base_model_config": base_model.base_model_config,
        "base_vocabulary": base_model.base_vocabulary,
        "finetune_data": finetune_data,
        "finetune_steps": finetune_steps,
        "train": trainer.train,
        "ModelConfig": ModelConfig,
        "DataConfig": DataConfig,
        "FileSet": FileSet,
        "OptimizerConfig": OptimizerConfig,
        "MeshConfig": MeshConfig,
        "TrainConfig": trainer.TrainConfig,
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    registry = gin_flags.configure("orca-train", __doc__, configurables(), argv)
    model_dir = gin_flags.macro_value("MODEL_DIR")
    keep_tensorflow_off_accelerators()
    print(f"config written to {gin_flags.write_config(model_dir)}", flush=True)
    final = gin_flags.call_configured(registry["train"], "train")
    if final:
        print("final: " + " | ".join(f"{k} {v:.4g}" for k, v in final.items()), flush=True)
    print(f"model dir: {os.path.abspath(model_dir)}", flush=True)


if __name__ == "__main__":
    main()
