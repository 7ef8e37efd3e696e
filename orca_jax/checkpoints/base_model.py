"""What a fine-tuning run reads from its base model (configs/runs/finetune.gin's BASE): the model's
shape and its tokenizer, so that no model gin has to repeat them field by field.

BASE is a Hugging Face LLaMA / Mistral folder, an `orca-import-hf` output, or an orca_jax run or
export. Nothing but configs and metadata is read here; train's `init_from` loads the parameters.
"""

from __future__ import annotations

import dataclasses

import jax

from orca_jax import paths
from orca_jax.checkpoints import bundle
from orca_jax.errors import ConfigError
from orca_jax.model.config import ModelConfig

# Where no dtype is given: fp32 master weights; bf16 activations and matmuls on accelerators, fp32
# on a CPU (which has no fast bf16 matmul, and where a small model trains in fp32 at the same speed).
AUTO = "auto"


def _base_meta(base: str) -> tuple[str, dict]:
    root, checkpoints = bundle.open_run(base)
    try:
        return root, checkpoints.restore_meta(checkpoints.resolve_step(None))
    finally:
        checkpoints.close()


def base_model_config(base: str, param_dtype: str = "float32", dtype: str = AUTO, **overrides) -> ModelConfig:
    """The ModelConfig of `base` (its shape, its id offset), with these runtime fields; any other
    field can be overridden too, but a shape that differs from the checkpoint's stops the run."""
    base = paths.absolute(base)
    if bundle.is_hf_folder(base):
        config = bundle.hf_model_config(base)
    else:
        config = ModelConfig.from_dict(_base_meta(base)[1]["model"])
    dtype = dtype if dtype != AUTO else ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"base_model_config: {unknown} are not ModelConfig fields (fields: {sorted(fields)})")
    return dataclasses.replace(config, param_dtype=param_dtype, dtype=dtype, **overrides)


def base_vocabulary(base: str) -> str:
    """The tokenizer file of `base`: an HF folder's tokenizer.model (or tokenizer.json alone), or the
    one a run or import keeps in its assets/."""
    base = paths.absolute(base)
    if bundle.is_hf_folder(base):
        tokenizer, _ = bundle.hf_tokenizer(base)
        where = f"{base} (no tokenizer.model or tokenizer.json)"
    else:
        root, meta = _base_meta(base)
        tokenizer = bundle.resolve_vocabulary(meta.get("vocabulary", ""), root)
        where = f"{root} (its checkpoint names no vocabulary)"
    if not tokenizer:
        raise ConfigError(f"BASE {where}: give the tokenizer with --gin.TOKENIZER=path/to/tokenizer.model")
    return tokenizer
