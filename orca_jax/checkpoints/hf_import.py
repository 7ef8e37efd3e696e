"""A Hugging Face LLaMA / Mistral folder -> an orca_jax checkpoint (what `orca-import-hf` does).

The checkpoint is OUT/checkpoints/0/ (params and meta) plus OUT/assets/ with the tokenizer, the
layout of a run, so everything that reads runs reads it. The parameters are stored in the folder's
own weights' dtype unless told otherwise, and the meta's ModelConfig says so (param_dtype and dtype),
so that loading and exporting the import keep that dtype.
"""

from __future__ import annotations

import dataclasses
import os

from orca_jax.checkpoints import bundle, hf
from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir
from orca_jax.data import jinja_templates
from orca_jax.errors import ConfigError
from orca_jax.model.config import ModelConfig


def import_hf(
    hf_dir: str, out: str, *, vocab_size: int = 0, dtype: str = "", id_offset: int | None = None,
    overwrite: bool = False,
) -> tuple[ModelConfig, dict]:  # fmt: skip
    """Writes the orca_jax checkpoint of `hf_dir` to `out`, reads it back and checks every tensor.

    `vocab_size` grows the vocabulary (the new rows start as the mean embedding); `dtype` ("" for
    the weights' own) is the stored parameters' and the compute dtype; `id_offset` None follows
    the tokenizer (see bundle.hf_tokenizer). Returns the model config and the checkpoint's meta."""
    if not os.path.isdir(hf_dir):
        raise ConfigError(f"--hf_dir {hf_dir}: no such folder")
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(f"{config_path}: missing (an HF model folder has config.json and safetensors)")
    hf.config_from_hf(bundle.read_hf_config(hf_dir), config_path)  # a clear error for an unsupported model
    config = bundle.hf_model_config(hf_dir, id_offset, dtype)
    if vocab_size:
        if vocab_size < config.vocab_size:
            raise ConfigError(f"--vocab_size {vocab_size} is smaller than the model's {config.vocab_size}")
        config = dataclasses.replace(config, vocab_size=vocab_size)
    bundle.prepare_output_dir(out, overwrite)

    params = bundle.load_hf_params(hf_dir, config)
    tokenizer, _ = bundle.hf_tokenizer(hf_dir)
    meta = {
        "model": config.to_dict(),
        "vocabulary": bundle.store_vocabulary(tokenizer, out) if tokenizer else "",
        "template": jinja_templates.folder_template(hf_dir, "orca"),  # the folder's own chat template, if any
        "source": {"hf_dir": os.path.abspath(hf_dir)},
    }
    checkpoints = Checkpoints(checkpoints_dir(out))
    checkpoints.save_params(0, params, meta)
    # Read it back: every tensor must come back bit for bit.
    bundle.verify_same(params, checkpoints.restore_params(0, params), f"{out} (read back)")
    checkpoints.close()
    return config, meta
