"""Exports of a checkpoint (what `orca-export` does): a Hugging Face folder, or parameters only.

`hf` writes config.json, sharded safetensors with their index, generation_config.json and the
tokenizer files transformers reads, with the chat template the model was trained in when it is a
model's own (Jinja) template; `params` writes an orca_jax checkpoint without optimizer state.
Each tensor is written in the dtype it is stored in (a run's param_dtype, an import's imported
dtype) unless a dtype is given to cast to, so that import -> export gives back the same bytes.
Every export is read back and checked tensor by tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import numpy as np

from orca_jax.checkpoints import bundle, hf
from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir
from orca_jax.data import jinja_templates
from orca_jax.data.vocab import DEFAULT_BOS_ID, DEFAULT_EOS_ID, read_tokenizer_config
from orca_jax.errors import CheckpointError
from orca_jax.model.config import DTYPES, RUNTIME_FIELDS
from orca_jax.parallel import sharding

FORMATS = ("hf", "params")


@dataclasses.dataclass
class Exported:
    step: int
    dtype: str  # the dtype(s) of the written tensors, e.g. "float32"
    files: list[str]  # what was written, relative to the output folder (plus notes)


def export(
    checkpoint_dir: str, out: str, fmt: str, *, step: int | None = None, dtype: str = "",
    max_shard_bytes: int = 5_000_000_000, overwrite: bool = False,
) -> Exported:  # fmt: skip
    """Exports `step` (default: the latest) of `checkpoint_dir` (a run, export, import or HF folder)
    to `out` in format `fmt`; `dtype` ("" keeps each tensor's stored dtype) casts the weights."""
    if fmt not in FORMATS:
        raise CheckpointError(f"export format {fmt!r} is not one of {FORMATS}")
    if os.path.abspath(out) == os.path.abspath(checkpoint_dir):
        raise CheckpointError("--out must differ from --checkpoint_dir")
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=1, tensor=1), jax.local_devices()[:1])
    with sharding.use_mesh(mesh):
        model_bundle = bundle.load(checkpoint_dir, mesh, step=step)
    bundle.prepare_output_dir(out, overwrite)
    params = jax.tree.map(np.asarray, jax.device_get(model_bundle.params))
    if dtype:
        params = jax.tree.map(lambda x: x.astype(DTYPES[dtype]), params)
    written = sorted({np.dtype(x.dtype).name for x in jax.tree.leaves(params)})
    if fmt == "hf":
        # config.json's label: the one dtype written, or the widest when a checkpoint mixes them.
        label = written[0] if len(written) == 1 else "float32"
        files = export_hf(model_bundle, params, out, label, max_shard_bytes)
    else:
        files = export_params(model_bundle, params, checkpoint_dir, out)
    return Exported(model_bundle.step, ", ".join(written), files)


def export_hf(model_bundle: bundle.ModelBundle, params, out: str, dtype_name: str, max_shard_bytes: int) -> list[str]:
    """A Hugging Face folder of host `params`, each tensor in its own dtype."""
    cfg = model_bundle.config
    vocab = model_bundle.vocabulary() if model_bundle.vocabulary_spec else None
    bos, eos = (vocab.bos_id, vocab.eos_id) if vocab is not None else (DEFAULT_BOS_ID, DEFAULT_EOS_ID)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf.config_to_hf(cfg, bos_id=bos, eos_id=eos, torch_dtype=dtype_name), f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": 0, "do_sample": False}, f, indent=2)
    files = hf.write_safetensors(out, hf.params_to_hf(params, cfg), max_shard_bytes)
    notes = write_tokenizer_files(model_bundle, out)

    # Read back: the config maps to the same model, and every tensor is what was meant to be written.
    with open(os.path.join(out, "config.json")) as f:
        written = hf.config_from_hf(json.load(f), f"{out}/config.json").resolved()
    unshifted = dataclasses.replace(cfg, vocab_size=cfg.vocab_size - cfg.id_offset, id_offset=0).resolved()
    for field, value in unshifted.to_dict().items():
        if field not in RUNTIME_FIELDS and getattr(written, field) != value:
            raise CheckpointError(
                f"{out}/config.json: {field} reads back as {getattr(written, field)!r}, not {value!r}"
            )
    folder = hf.SafetensorsFolder(out)
    expected = dict(hf.params_to_hf(params, cfg))
    if sorted(expected) != folder.names():
        raise CheckpointError(f"{out}: the safetensors hold other tensors than were written")
    for name, tensor in expected.items():
        back = folder.get(name)
        if back.dtype != tensor.dtype or not np.array_equal(back, tensor):
            raise CheckpointError(f"{out}: tensor {name} reads back different from what was written")
    return files + notes


def write_tokenizer_files(model_bundle: bundle.ModelBundle, out: str) -> list[str]:
    """tokenizer.model and the configs transformers' LlamaTokenizer reads; none for the byte vocabulary."""
    spec = model_bundle.vocabulary_spec
    if not spec or spec == "byte":
        return [f"(no tokenizer files: the vocabulary is {spec or 'unknown'!r}, which transformers has no class for)"]
    # The template the model was trained in, so that transformers, vLLM or TGI chat in it: a model's
    # own as it came, or one of orca_jax's written as Jinja.
    chat_template = jinja_templates.chat_template_text(model_bundle.template)
    if spec.endswith(".json"):  # a Hugging Face tokenizer: its own file is what transformers reads
        shutil.copyfile(spec, os.path.join(out, "tokenizer.json"))
        vocab = model_bundle.vocabulary()
        config = _source_tokenizer_config(spec) or {
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": vocab.token(vocab.bos_id),
            "eos_token": vocab.token(vocab.eos_id),
        }  # fmt: skip
        config["chat_template"] = chat_template
        with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)
        return ["tokenizer.json", "tokenizer_config.json"]
    vocab = model_bundle.vocabulary()
    shutil.copyfile(spec, os.path.join(out, "tokenizer.model"))
    sp = getattr(vocab, "base", vocab).tokenizer  # under the added tokens, if any
    special = {"bos_token": sp.id_to_piece(vocab.bos_id), "eos_token": sp.id_to_piece(vocab.eos_id),
               "unk_token": sp.id_to_piece(vocab.unk_id)}  # fmt: skip
    added = {}
    names = model_bundle.added_tokens or ("<pad>",)  # an import grown by --vocab_size: Orca's pad first
    for i in range(sp.get_piece_size(), model_bundle.config.vocab_size):  # added tokens, e.g. Orca's pad
        n = i - sp.get_piece_size()
        content = names[n] if n < len(names) else f"<extra_{i}>"
        added[str(i)] = {"content": content, "special": True, "lstrip": False, "rstrip": False,
                         "normalized": False, "single_word": False}  # fmt: skip
    if "<pad>" in [a["content"] for a in added.values()]:
        special["pad_token"] = "<pad>"
    # legacy: a "▁" before the text after a special token (a template's "<s>[INST]"), as SentencePiece
    # encodes each piece of text and as orca_jax trained; without it transformers would tokenize a
    # chat prompt differently from the way the model learned it.
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "legacy": True, "model_max_length": 4096, "added_tokens_decoder": added, **special}  # fmt: skip
    config["chat_template"] = chat_template
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    return ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]


def _source_tokenizer_config(tokenizer_json: str) -> dict:
    """The tokenizer_config.json beside a tokenizer.json (copied into a run's assets), without its chat
    template, which the export sets from the checkpoint's own."""
    config = read_tokenizer_config(os.path.dirname(tokenizer_json))
    config.pop("chat_template", None)
    return config


def export_params(model_bundle: bundle.ModelBundle, params, checkpoint_dir: str, out: str) -> list[str]:
    """A parameters-only orca_jax checkpoint of host `params`; its ModelConfig's param_dtype is the
    dtype written, so that loading it restores the tensors as written."""
    spec = model_bundle.vocabulary_spec
    dtypes = {np.dtype(x.dtype).name for x in jax.tree.leaves(params)}
    config = model_bundle.config.to_dict()
    if len(dtypes) == 1:
        config["param_dtype"] = dtypes.pop()
    meta = {
        "model": config,
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
