"""orca-import-hf: a Hugging Face LLaMA or Mistral folder -> an orca_jax checkpoint orca-train can start from.

    orca-import-hf --hf_dir ./Llama-2-7b-hf --out /ckpt/llama2_7b [--vocab_size 32001] [--dtype float32]

Reads config.json and the safetensors weights (single file or sharded with an index; pickled .bin
weights are never loaded), writes OUT/checkpoints/0/ (params and meta) and OUT/assets/tokenizer.model
when the folder has one, then reads the checkpoint back and checks every tensor. Start training from
it with `--gin.train.init_from=OUT`. `--vocab_size` adds token rows (Orca's pad token makes 32,001);
they start as the mean of the existing embeddings. The parameters keep the weights' dtype unless
--dtype says otherwise, and orca_jax.load and orca-export keep that dtype too.
"""

from __future__ import annotations

import argparse
import os
import sys

from orca_jax.errors import exit_on_user_error
from orca_jax.model.config import DTYPES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orca-import-hf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--hf_dir", required=True, help="folder with config.json and *.safetensors")
    p.add_argument("--out", required=True, help="folder to write the orca_jax checkpoint into")
    p.add_argument("--vocab_size", type=int, default=0, help="grow the vocabulary to this many ids (added tokens)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="",
                   help="dtype of the stored parameters and of computing with them (default: the weights' own: "
                   "bfloat16 when all are bfloat16, else float32)")  # fmt: skip
    p.add_argument("--id_offset", choices=("auto", "0", "1"), default="auto",
                   help="shift token ids up by this (auto: 1 for a folder with tokenizer.json but no tokenizer.model, "
                   "so that id 0 stays padding; see orca_jax/data/vocab.py)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from orca_jax.checkpoints.hf_import import import_hf

    id_offset = None if args.id_offset == "auto" else int(args.id_offset)
    config, meta = import_hf(
        args.hf_dir, args.out, vocab_size=args.vocab_size, dtype=args.dtype, id_offset=id_offset,
        overwrite=args.overwrite,
    )  # fmt: skip
    count, out = f"{config.num_params():,}", os.path.abspath(args.out)
    print(f"imported {args.hf_dir}: {count} parameters ({config.param_dtype}) -> {out}")
    if not meta["vocabulary"]:
        print("note: no tokenizer in the HF folder; set DataConfig.vocabulary when training from it")
    if config.id_offset:
        print(f"token ids are shifted up by {config.id_offset}: train with DataConfig.vocabulary = its tokenizer.json")
    print(f"train from it with --gin.train.init_from={os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
