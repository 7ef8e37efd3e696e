"""orca-import-hf: a Hugging Face LLaMA or Mistral folder -> an orca_jax checkpoint orca-train can start from.

    orca-import-hf --hf_dir ./Llama-2-7b-hf --out /ckpt/llama2_7b [--vocab_size 32001] [--dtype bfloat16]

Reads config.json and the safetensors weights (single file or sharded with an index; pickled .bin
weights are never loaded), writes OUT/checkpoints/0/ (params and meta) and OUT/assets/tokenizer.model
when the folder has one, then reads the checkpoint back and checks every tensor. Start training from
it with `--gin.train.init_from=OUT`. `--vocab_size` adds token rows (Orca's pad token makes 32,001);
they start as the mean of the existing embeddings.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from orca_jax.errors import ConfigError, exit_on_user_error

DTYPES = ("float32", "bfloat16")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orca-import-hf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--hf_dir", required=True, help="folder with config.json and *.safetensors")
    p.add_argument("--out", required=True, help="folder to write the orca_jax checkpoint into")
    p.add_argument("--vocab_size", type=int, default=0, help="grow the vocabulary to this many ids (added tokens)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the stored parameters")
    p.add_argument("--id_offset", choices=("auto", "0", "1"), default="auto",
                   help="shift token ids up by this (auto: 1 for a folder with tokenizer.json but no tokenizer.model, "
                   "so that id 0 stays padding; see orca_jax/data/vocab.py)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import ml_dtypes

    from orca_jax import bundle
    from orca_jax.model import hf
    from orca_jax.training.checkpoint import Checkpoints, checkpoints_dir

    if not os.path.isdir(args.hf_dir):
        raise ConfigError(f"--hf_dir {args.hf_dir}: no such folder")
    config_path = os.path.join(args.hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(f"{config_path}: missing (an HF model folder has config.json and safetensors)")
    hf.config_from_hf(bundle.read_hf_config(args.hf_dir), config_path)  # a clear error for an unsupported model
    config = bundle.hf_model_config(args.hf_dir, None if args.id_offset == "auto" else int(args.id_offset))
    if args.vocab_size:
        if args.vocab_size < config.vocab_size:
            raise ConfigError(f"--vocab_size {args.vocab_size} is smaller than the model's {config.vocab_size}")
        config = type(config).from_dict({**config.to_dict(), "vocab_size": args.vocab_size})
    bundle.prepare_output_dir(args.out, args.overwrite)

    dtype = np.float32 if args.dtype == "float32" else ml_dtypes.bfloat16
    params = bundle.load_hf_params(args.hf_dir, config, dtype)
    tokenizer, _ = bundle.hf_tokenizer(args.hf_dir)
    meta = {
        "model": config.to_dict(),
        "vocabulary": bundle.store_vocabulary(tokenizer, args.out) if tokenizer else "",
        "template": "orca",
        "source": {"hf_dir": os.path.abspath(args.hf_dir)},
    }
    checkpoints = Checkpoints(checkpoints_dir(args.out))
    checkpoints.save_params(0, params, meta)
    # Read it back: every tensor must come back bit for bit.
    restored = checkpoints.restore_params(0, params)
    bundle.verify_same(params, restored, f"{args.out} (read back)")
    checkpoints.close()
    print(f"imported {args.hf_dir}: {config.num_params():,} parameters ({args.dtype}) -> {os.path.abspath(args.out)}")
    if not meta["vocabulary"]:
        print("note: no tokenizer in the HF folder; set DataConfig.vocabulary when training from it")
    if config.id_offset:
        print(f"token ids are shifted up by {config.id_offset}: train with DataConfig.vocabulary = its tokenizer.json")
    print(f"train from it with --gin.train.init_from={os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
