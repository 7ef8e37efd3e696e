"""A model bundle: config, parameters, vocabulary and chat template, read from any folder orca_jax knows.

Folders it reads:
    an orca_jax run (MODEL_DIR, with checkpoints/<step>/ holding params and meta), including
    parameters-only exports and `orca-import-hf` outputs, which have the same layout; or
    a Hugging Face LLaMA / Mistral folder (config.json and safetensors), whose own chat template
    (tokenizer_config.json or chat_template.jinja) is its template, else Orca's.

A run's vocabulary travels with it: a SentencePiece model is copied to ROOT/assets/ when the run
starts (or the folder is imported or exported), and the checkpoint's meta names it relative to ROOT.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import seqio
import tensorflow as tf
from jax.sharding import Mesh

from orca_jax import paths
from orca_jax.checkpoints import hf
from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir
from orca_jax.data import jinja_templates
from orca_jax.data.vocab import ID_OFFSET, make_vocabulary
from orca_jax.errors import CheckpointError
from orca_jax.model.config import DTYPES, ModelConfig
from orca_jax.model.llama import Decoder, abstract_params
from orca_jax.parallel.sharding import shardings_of, strip_axis_names

ASSETS = "assets"
TOKENIZER_FILE = "tokenizer.model"
TOKENIZER_JSON = "tokenizer.json"


@dataclasses.dataclass
class ModelBundle:
    config: ModelConfig
    params: Any  # jax arrays placed on the mesh it was loaded for
    vocabulary_spec: str  # "byte", or an absolute path to a tokenizer file ("" if unknown)
    template: str
    step: int
    meta: dict
    added_tokens: tuple[str, ...] = ()

    @property
    def model(self) -> Decoder:
        return Decoder(self.config)

    def vocabulary(self) -> seqio.Vocabulary:
        if not self.vocabulary_spec:
            raise CheckpointError("this model has no known vocabulary; pass token ids instead of text")
        return make_vocabulary(self.vocabulary_spec, self.added_tokens)


# A tokenizer's configs beside its file (special tokens, chat template): copied with it, so that a
# run, import or export from an HF folder still has its chat template (DataConfig.template 'tokenizer').
TOKENIZER_SIDECARS = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def store_vocabulary(spec: str, root: str) -> str:
    """The meta entry for vocabulary `spec`: `byte`, or a copy of the tokenizer file (and of the
    configs beside it) under ROOT."""
    if spec in ("byte", ""):
        return spec
    name = TOKENIZER_JSON if spec.endswith(".json") else TOKENIZER_FILE
    tf.io.gfile.makedirs(os.path.join(root, ASSETS))
    target = os.path.join(root, ASSETS, name)
    if os.path.abspath(spec) != os.path.abspath(target):
        tf.io.gfile.copy(spec, target, overwrite=True)
        for sidecar in TOKENIZER_SIDECARS:
            source = os.path.join(os.path.dirname(spec), sidecar)
            if tf.io.gfile.exists(source):
                tf.io.gfile.copy(source, os.path.join(root, ASSETS, sidecar), overwrite=True)
    return os.path.join(ASSETS, name)


def resolve_vocabulary(entry: str, root: str) -> str:
    if entry in ("byte", "") or os.path.isabs(entry):
        return entry
    return os.path.join(root, entry)


def is_hf_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def open_run(path: str) -> tuple[str, Checkpoints]:
    """ROOT and its checkpoints, for a MODEL_DIR or the checkpoints folder inside one."""
    path = paths.absolute(path)
    if tf.io.gfile.isdir(checkpoints_dir(path)):
        return path, Checkpoints(checkpoints_dir(path), create=False)
    if os.path.basename(path) == "checkpoints":
        return os.path.dirname(path), Checkpoints(path, create=False)
    raise CheckpointError(f"{path}: no checkpoints folder (is this a MODEL_DIR that orca-train wrote?)")


def load(path: str, mesh: Mesh, *, step: int | None = None, compute_dtype: str = "") -> ModelBundle:
    """The model in `path` (an orca_jax run or an HF folder), parameters sharded on `mesh`.

    Parameters keep the dtype they are stored in, and the model computes in the dtype its source
    says: a run's or export's ModelConfig (an import's is the imported weights' dtype), or an HF
    folder's weights' dtype (see hf_model_config). `compute_dtype` overrides the dtype of
    activations and matmuls (e.g. float32 on a CPU); the parameters stay as stored."""
    model_bundle = _load_hf(path, mesh) if is_hf_folder(path) else _load_run(path, mesh, step)
    if compute_dtype:
        model_bundle.config = ModelConfig.from_dict({**model_bundle.config.to_dict(), "dtype": compute_dtype})
    return model_bundle


def _load_run(path: str, mesh: Mesh, step: int | None) -> ModelBundle:
    root, checkpoints = open_run(path)
    step = checkpoints.resolve_step(step)
    meta = checkpoints.restore_meta(step)
    config = ModelConfig.from_dict(meta["model"])
    boxed = abstract_params(Decoder(config))
    params = checkpoints.restore_params(step, strip_axis_names(boxed), shardings_of(boxed, mesh))
    checkpoints.close()
    data = meta.get("data") or {}
    vocabulary = meta.get("vocabulary", data.get("vocabulary", ""))
    return ModelBundle(
        config=config,
        params=params,
        vocabulary_spec=resolve_vocabulary(vocabulary, root),
        template=meta.get("template", data.get("template", "orca")),
        step=step,
        meta=meta,
        added_tokens=tuple(meta.get("added_tokens", data.get("added_tokens", ()))),
    )


def read_hf_config(path: str) -> dict:
    where = os.path.join(path, "config.json")
    try:
        with open(where) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}:{e.lineno}: not valid JSON ({e.msg})") from None


def load_hf_params(path: str, config: ModelConfig) -> dict:
    """HF weights as orca_jax parameters on the host (numpy), in `config.param_dtype`."""
    return hf.params_from_hf(hf.SafetensorsFolder(path).get, config, DTYPES[config.param_dtype])


def hf_tokenizer(path: str) -> tuple[str, int]:
    """An HF folder's tokenizer file and the id offset orca_jax uses with it: a SentencePiece
    tokenizer.model keeps its ids; a tokenizer.json alone (LLaMA-3 style) shifts them by one."""
    for name, offset in ((TOKENIZER_FILE, 0), (TOKENIZER_JSON, ID_OFFSET)):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.abspath(os.path.join(path, name)), offset
    return "", 0


def hf_model_config(path: str, id_offset: int | None = None, dtype: str = "") -> ModelConfig:
    """The ModelConfig of an HF folder; `id_offset` None follows its tokenizer (see hf_tokenizer).

    Parameters are held, and the model computes, in `dtype`, or by default in the weights' own
    dtype (hf.weights_dtype), so that nothing is rounded and the logits are those the weights give
    in transformers. The safetensors tensors win over config.json's `torch_dtype` (`dtype` in newer
    transformers): the tensors are what is computed with, while the config entry is a label that
    conversion scripts often leave stale and that older folders lack."""
    config = hf.config_from_hf(read_hf_config(path), os.path.join(path, "config.json"))
    offset = hf_tokenizer(path)[1] if id_offset is None else id_offset
    dtype = dtype or hf.weights_dtype(hf.SafetensorsFolder(path).dtypes())
    return dataclasses.replace(
        config, id_offset=offset, vocab_size=config.vocab_size + offset, param_dtype=dtype, dtype=dtype
    )


def _load_hf(path: str, mesh: Mesh) -> ModelBundle:
    config = hf_model_config(path)
    params = load_hf_params(path, config)
    boxed = abstract_params(Decoder(config))
    params = jax.tree.map(lambda x, s: jax.device_put(x, s), params, shardings_of(boxed, mesh))
    tokenizer, _ = hf_tokenizer(path)
    return ModelBundle(
        config=config,
        params=params,
        vocabulary_spec=tokenizer,
        template=jinja_templates.folder_template(path, "orca"),
        step=0,
        meta={"source": {"hf_dir": os.path.abspath(path)}},
    )


def prepare_output_dir(path: str, overwrite: bool) -> None:
    """Creates `path`; a non-empty one is refused unless `overwrite`, and then emptied first."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(f"{path}: exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise CheckpointError(f"{path}: folder is not empty; choose another output folder or pass --overwrite")
        for name in os.listdir(path):
            full = os.path.join(path, name)
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)
    os.makedirs(path, exist_ok=True)


def verify_same(expected, got, where: str) -> None:
    """Raises when any tensor of `got` differs from `expected` (bit for bit, same dtype)."""
    flat_expected = jax.tree_util.tree_flatten_with_path(expected)[0]
    flat_got = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    for path, value in flat_expected:
        name = jax.tree_util.keystr(path)
        other = flat_got.get(path)
        if other is None:
            raise CheckpointError(f"{where}: {name} is missing")
        a, b = np.asarray(value), np.asarray(other)
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
            raise CheckpointError(f"{where}: {name} differs from what was written ({b.dtype}{list(b.shape)})")
