"""orca-export: hand a trained checkpoint to others.

    orca-export --checkpoint_dir MODEL_DIR [--step N] --format hf --out OUT [--dtype bfloat16]
    orca-export --checkpoint_dir MODEL_DIR [--step N] --format params --out OUT [--dtype bfloat16]

`hf` writes a Hugging Face folder that `transformers.AutoModelForCausalLM.from_pretrained(OUT)` loads:
config.json, sharded safetensors with their index, generation_config.json, and the tokenizer files
(tokenizer.model, tokenizer_config.json, special_tokens_map.json) when the run used a SentencePiece
vocabulary. `params` writes a parameters-only orca_jax checkpoint (no optimizer state: a 13B model
in bfloat16 is ~26 GB instead of ~156 GB) that orca-eval, orca-train's init_from and orca_jax.load
read. Each tensor is written in the dtype it is stored in (a run's param_dtype, an import's
imported dtype) unless --dtype casts it. Either way the export is read back and checked tensor by
tensor. A non-empty OUT is refused unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import sys

from orca_jax.errors import exit_on_user_error
from orca_jax.model.config import DTYPES

FORMATS = ("hf", "params")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orca-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint_dir", required=True, help="MODEL_DIR of an orca-train run (or an export, or an import)"
    )
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", required=True, help="folder to write (must be empty unless --overwrite)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="",
                   help="cast the written weights to this (default: as stored)")  # fmt: skip
    p.add_argument("--max_shard_gb", type=float, default=5.0, help="largest safetensors shard, in GB (hf format)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from orca_jax.checkpoints.export import export

    done = export(
        args.checkpoint_dir, args.out, args.format, step=args.step, dtype=args.dtype,
        max_shard_bytes=int(args.max_shard_gb * 1e9), overwrite=args.overwrite,
    )  # fmt: skip
    print(f"exported step {done.step} of {args.checkpoint_dir} as {args.format} ({done.dtype}) to {args.out}:")
    for name in done.files:
        print(f"  {name}")
    print("read back and verified")


if __name__ == "__main__":
    main()
