"""orca-export: hand a trained checkpoint to others.

    orca-export --checkpoint_dir MODEL_DIR [--step N] --format hf --out OUT [--dtype bfloat16]
    orca-export --checkpoint_dir MODEL_DIR [--step N] --format params --out OUT [--dtype bfloat16]

`hf` writes a Hugging Face folder that `transformers.AutoModelForCausalLM.from_pretrained(OUT)` loads:
config.json, sharded safetensors with their index, generation_config.json, and the tokenizer files
(tokenizer.model, tokenizer_config.json, special_tokens_map.json) when the run used a SentencePiece
vocabulary. `params` writes a parameters-only orca_jax checkpoint (no optimizer state: a 13B model
in bfloat16 is ~26 GB instead of ~156 GB) that orca-eval, orca-train's init_from and orca_jax.load
read. Either way the export is read back and checked tensor by tensor. A non-empty OUT is refused
unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys

import numpy as np

from orca_jax.errors import CheckpointError, exit_on_user_error

FORMATS = ("hf", "params")
DTYPES = ("float32", "bfloat16")


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
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="dtype of the written weights")
    p.add_argument("--max_shard_gb", type=float, default=5.0, help="largest safetensors shard, in GB (hf format)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    return p


def host_params(params) -> dict:
    import jax

    return jax.tree.map(np.asarray, jax.device_get(params))


def cast(params, dtype):
    import jax

    return jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)


def export_hf(model_bundle, out: str, dtype, dtype_name: str, max_shard_bytes: int) -> list[str]:
    from orca_jax.model import hf

    cfg = model_bundle.config
    params = host_params(model_bundle.params)
    vocab = model_bundle.vocabulary() if model_bundle.vocabulary_spec else None
    bos, eos = (vocab.bos_id, vocab.eos_id) if vocab is not None else (1, 2)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf.config_to_hf(cfg, bos_id=bos, eos_id=eos, torch_dtype=dtype_name), f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": 0, "do_sample": False}, f, indent=2)
    files = hf.write_safetensors(out, hf.params_to_hf(params, cfg, dtype), max_shard_bytes)
    notes = write_tokenizer_files(model_bundle, out)

    # Read back: the config maps to the same model, and every tensor is what was meant to be written.
    written = hf.config_from_hf(json.load(open(os.path.join(out, "config.json"))), f"{out}/config.json")
    runtime = ("param_dtype", "dtype", "remat", "attention")
    unshifted = dataclasses.replace(cfg, vocab_size=cfg.vocab_size - cfg.id_offset, id_offset=0).resolved()
    written = written.resolved()
    for field, value in unshifted.to_dict().items():
        if field not in runtime and getattr(written, field) != value:
            raise CheckpointError(
                f"{out}/config.json: {field} reads back as {getattr(written, field)!r}, not {value!r}"
            )
    folder = hf.SafetensorsFolder(out)
    expected = dict(hf.params_to_hf(params, cfg, dtype))
    if sorted(expected) != folder.names():
        raise CheckpointError(f"{out}: the safetensors hold other tensors than were written")
    for name, tensor in expected.items():
        back = folder.get(name)
        if back.dtype != tensor.dtype or not np.array_equal(back, tensor):
            raise CheckpointError(f"{out}: tensor {name} reads back different from what was written")
    return files + notes


def write_tokenizer_files(model_bundle, out: str) -> list[str]:
    """tokenizer.model and the configs transformers' LlamaTokenizer reads; none for the byte vocabulary."""
    spec = model_bundle.vocabulary_spec
    if not spec or spec == "byte":
        return [f"(no tokenizer files: the vocabulary is {spec or 'unknown'!r}, which transformers has no class for)"]
    if spec.endswith(".json"):  # a Hugging Face tokenizer: its own file is what transformers reads
        shutil.copyfile(spec, os.path.join(out, "tokenizer.json"))
        return ["tokenizer.json"]
    vocab = model_bundle.vocabulary()
    shutil.copyfile(spec, os.path.join(out, "tokenizer.model"))
    sp = vocab.tokenizer
    special = {"bos_token": sp.id_to_piece(vocab.bos_id), "eos_token": sp.id_to_piece(vocab.eos_id),
               "unk_token": sp.id_to_piece(vocab.unk_id)}  # fmt: skip
    added = {}
    for i in range(sp.get_piece_size(), model_bundle.config.vocab_size):  # added tokens, e.g. Orca's pad
        content = "<pad>" if i == sp.get_piece_size() else f"<extra_{i}>"
        added[str(i)] = {"content": content, "special": True, "lstrip": False, "rstrip": False,
                         "normalized": False, "single_word": False}  # fmt: skip
    if added:
        special["pad_token"] = "<pad>"
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "legacy": False, "model_max_length": 4096, "added_tokens_decoder": added, **special}  # fmt: skip
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    return ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]


def export_params(model_bundle, checkpoint_dir: str, out: str, dtype) -> list[str]:
    from orca_jax import bundle
    from orca_jax.training.checkpoint import Checkpoints, checkpoints_dir

    params = cast(host_params(model_bundle.params), dtype)
    spec = model_bundle.vocabulary_spec
    meta = {
        "model": model_bundle.config.to_dict(),
        "vocabulary": bundle.store_vocabulary(spec, out) if spec else "",
        "template": model_bundle.template,
        "source": {"run": os.path.abspath(checkpoint_dir), "step": model_bundle.step},
    }
    if "data" in model_bundle.meta:
        meta["data"] = model_bundle.meta["data"]
    checkpoints = Checkpoints(checkpoints_dir(out))
    checkpoints.save_params(model_bundle.step, params, meta)
    bundle.verify_same(params, checkpoints.restore_params(model_bundle.step, params), f"{out} (read back)")
    checkpoints.close()
    return [f"checkpoints/{model_bundle.step}/params", f"checkpoints/{model_bundle.step}/meta"]


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import jax
    import ml_dtypes

    from orca_jax import bundle
    from orca_jax.parallel import sharding

    if os.path.abspath(args.out) == os.path.abspath(args.checkpoint_dir):
        raise CheckpointError("--out must differ from --checkpoint_dir")
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=1, tensor=1), jax.local_devices()[:1])
    with sharding.use_mesh(mesh):
        model_bundle = bundle.load(args.checkpoint_dir, mesh, step=args.step)
    bundle.prepare_output_dir(args.out, args.overwrite)
    dtype = np.float32 if args.dtype == "float32" else ml_dtypes.bfloat16
    if args.format == "hf":
        files = export_hf(model_bundle, args.out, dtype, args.dtype, int(args.max_shard_gb * 1e9))
    else:
        files = export_params(model_bundle, args.checkpoint_dir, args.out, dtype)
    print(f"exported step {model_bundle.step} of {args.checkpoint_dir} as {args.format} ({args.dtype}) to {args.out}:")
    for name in files:
        print(f"  {name}")
    print("read back and verified")


if __name__ == "__main__":
    main()
