"""Hugging Face LLaMA / Mistral <-> orca_jax: configs, weight names and layouts, safetensors folders.

Weights, per layer i (HF keeps `[out, in]` matrices; orca_jax keeps `[in, out]`, layers stacked):

    model.embed_tokens.weight                 [V, D]    embedding              [Vp, D]  rows >= V zero
    model.layers.i.self_attn.q_proj.weight    [H*E, D]  layers.wq[i]           [D, H, E]
    model.layers.i.self_attn.k_proj.weight    [K*E, D]  layers.wk[i]           [D, K, E]
    model.layers.i.self_attn.v_proj.weight    [K*E, D]  layers.wv[i]           [D, K, E]
    model.layers.i.self_attn.o_proj.weight    [D, H*E]  layers.wo[i]           [H, E, D]
    model.layers.i.mlp.gate_proj.weight       [F, D]    layers.w_gate[i]       [D, F]
    model.layers.i.mlp.up_proj.weight         [F, D]    layers.w_up[i]         [D, F]
    model.layers.i.mlp.down_proj.weight       [D, F]    layers.w_down[i]       [F, D]
    model.layers.i.input_layernorm.weight     [D]       layers.attn_norm[i]    [D]
    model.layers.i.post_attention_layernorm   [D]       layers.mlp_norm[i]     [D]
    model.norm.weight                         [D]       final_norm             [D]
    lm_head.weight (absent when tied)         [V, D]    lm_head                [D, Vp]

HF's q/k weights are already permuted for the rotate-half RoPE layout that orca_jax uses, so they
map without reordering. Only safetensors are read or written; no pickle is ever loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from orca_jax.errors import ConfigError
from orca_jax.model.config import ModelConfig

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
LAYER_PARAMS = {  # orca_jax name under layers: HF name under model.layers.i
    "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight",
    "w_gate": "mlp.gate_proj.weight",
    "w_up": "mlp.up_proj.weight",
    "w_down": "mlp.down_proj.weight",
    "attn_norm": "input_layernorm.weight",
    "mlp_norm": "post_attention_layernorm.weight",
}


# Configs.


def _require(config: dict, field: str, where: str):
    if field not in config:
        raise ConfigError(f"{where}: field {field!r} is missing")
    return config[field]


def config_from_hf(config: dict, where: str = "config.json") -> ModelConfig:
    """A ModelConfig from an HF config.json dict; anything orca_jax cannot represent is an error
    naming the field."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not supported (supported: {sorted(ARCHITECTURES)})")
    unsupported = {
        "hidden_act": ("silu", config.get("hidden_act", "silu")),
        "attention_bias": (False, bool(config.get("attention_bias", False))),
        "mlp_bias": (False, bool(config.get("mlp_bias", False))),
        "pretraining_tp": (1, config.get("pretraining_tp", 1)),
    }
    for field, (wanted, got) in unsupported.items():
        if got != wanted:
            raise ConfigError(f"{where}: {field} = {got!r} is not supported (orca_jax needs {wanted!r})")
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = {}
    if rope_type == "llama3":
        scaling = {
            "rope_scaling_factor": float(_require(rope, "factor", f"{where}: rope_parameters")),
            "rope_low_freq_factor": float(_require(rope, "low_freq_factor", f"{where}: rope_parameters")),
            "rope_high_freq_factor": float(_require(rope, "high_freq_factor", f"{where}: rope_parameters")),
            "rope_original_max_position": int(_require(rope, "original_max_position_embeddings", where)),
        }
    elif rope_type != "default":
        raise ConfigError(f"{where}: rope type {rope_type!r} is not supported (supported: default, llama3)")
    heads = int(_require(config, "num_attention_heads", where))
    d_model = int(_require(config, "hidden_size", where))
    return ModelConfig(
        vocab_size=int(_require(config, "vocab_size", where)),
        d_model=d_model,
        num_layers=int(_require(config, "num_hidden_layers", where)),
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or d_model // heads),
        mlp_dim=int(_require(config, "intermediate_size", where)),
        rope_theta=float(theta),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        sliding_window=int(config.get("sliding_window") or 0) if model_type == "mistral" else 0,
        **scaling,
    )


def config_to_hf(cfg: ModelConfig, *, bos_id: int = 1, eos_id: int = 2, torch_dtype: str = "float32") -> dict:
    """An HF config.json dict: Mistral when the model has a sliding window, LLaMA otherwise. Token
    ids (bos_id, eos_id) are orca_jax's; they are shifted back by `cfg.id_offset`."""
    bos_id, eos_id = bos_id - cfg.id_offset, eos_id - cfg.id_offset
    model_type = "mistral" if cfg.sliding_window else "llama"
    rope: dict = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling_factor:
        rope = {
            "rope_type": "llama3",
            "rope_theta": cfg.rope_theta,
            "factor": cfg.rope_scaling_factor,
            "low_freq_factor": cfg.rope_low_freq_factor,
            "high_freq_factor": cfg.rope_high_freq_factor,
            "original_max_position_embeddings": cfg.rope_original_max_position,
        }
    config = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size - cfg.id_offset,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.mlp_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_size,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": rope,
        "max_position_embeddings": max(4096, 2 * cfg.rope_original_max_position if cfg.rope_scaling_factor else 0),
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": torch_dtype,
    }
    if cfg.sliding_window:
        config["sliding_window"] = cfg.sliding_window
    return config


# Weights.


def _to_ours(name: str, hf: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    d, h, k, e = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size
    if name == "wq":
        return hf.T.reshape(d, h, e)
    if name in ("wk", "wv"):
        return hf.T.reshape(d, k, e)
    if name == "wo":
        return hf.T.reshape(h, e, d)
    if name in ("w_gate", "w_up", "w_down"):
        return hf.T
    return hf  # norms


def _to_hf(name: str, ours: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    d = cfg.d_model
    if name in ("wq", "wk", "wv"):
        return ours.reshape(d, -1).T
    if name == "wo":
        return ours.reshape(-1, d).T
    if name in ("w_gate", "w_up", "w_down"):
        return ours.T
    return ours


def _pad_rows(table: np.ndarray, rows: int, fill: np.ndarray | None = None) -> np.ndarray:
    """Pads [V, D] to [rows, D]; new rows take `fill` (e.g. the mean embedding) or zeros."""
    out = np.zeros((rows, table.shape[1]), table.dtype)
    out[: table.shape[0]] = table
    if fill is not None:
        out[table.shape[0] :] = fill
    return out


def params_from_hf(get: Callable[[str], np.ndarray], cfg: ModelConfig, dtype=np.float32) -> dict:
    """orca_jax parameters from HF tensors read one at a time by `get(name)`.

    With `cfg.id_offset`, every HF id i becomes i + offset and the rows below the offset are zero.
    When `cfg.vocab_size` exceeds the HF model's (added tokens, like Orca's pad token), the new
    rows of the embedding and the LM head start as the mean of the existing ones; rows past
    `cfg.vocab_size` (the padding to a multiple of 128) are zero and never predicted."""
    vp, offset = cfg.padded_vocab_size, cfg.id_offset

    def grow(table: np.ndarray) -> np.ndarray:  # [hf_vocab, D] -> [Vp, D]
        table = table.astype(dtype)
        shifted = np.concatenate([np.zeros((offset, table.shape[1]), dtype), table]) if offset else table
        grown = _pad_rows(shifted, cfg.vocab_size, table.mean(axis=0))
        return _pad_rows(grown, vp)

    params = {
        "embedding": grow(get("model.embed_tokens.weight")),
        "final_norm": get("model.norm.weight").astype(dtype),
        "layers": {
            name: np.stack(
                [_to_ours(name, get(f"model.layers.{i}.{hf}"), cfg).astype(dtype) for i in range(cfg.num_layers)]
            )
            for name, hf in LAYER_PARAMS.items()
        },
    }
    if not cfg.tie_embeddings:
        params["lm_head"] = np.ascontiguousarray(grow(get("lm_head.weight")).T)
    return params


def params_to_hf(params: dict, cfg: ModelConfig, dtype=np.float32) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, tensor) pairs for the parameters, padded vocabulary rows removed."""
    lo, v = cfg.id_offset, cfg.vocab_size
    yield "model.embed_tokens.weight", np.asarray(params["embedding"])[lo:v].astype(dtype)
    for i in range(cfg.num_layers):
        for name, hf in LAYER_PARAMS.items():
            yield (
                f"model.layers.{i}.{hf}",
                np.ascontiguousarray(_to_hf(name, np.asarray(params["layers"][name][i]), cfg)).astype(dtype),
            )
    yield "model.norm.weight", np.asarray(params["final_norm"]).astype(dtype)
    if not cfg.tie_embeddings:
        yield "lm_head.weight", np.ascontiguousarray(np.asarray(params["lm_head"])[:, lo:v].T).astype(dtype)


# Safetensors folders.

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


class SafetensorsFolder:
    """Reads tensors by name from an HF folder's single or sharded (indexed) safetensors files."""

    def __init__(self, folder: str):
        index_path = os.path.join(folder, INDEX_NAME)
        single = os.path.join(folder, WEIGHTS_NAME)
        if os.path.isfile(index_path):
            with open(index_path) as f:
                try:
                    weight_map = json.load(f)["weight_map"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise ConfigError(f"{index_path}: not a safetensors index ({e})") from None
            self._files = {name: os.path.join(folder, file) for name, file in weight_map.items()}
        elif os.path.isfile(single):
            with safe_open(single, "np") as f:
                self._files = {name: single for name in f.keys()}
        else:
            found = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            hint = (
                " (pickled .bin weights are never loaded; convert them to safetensors)"
                if any(n.endswith(".bin") for n in found)
                else ""
            )
            raise ConfigError(f"{folder}: no {WEIGHTS_NAME} or {INDEX_NAME}{hint}")
        self.folder = folder

    def names(self) -> list[str]:
        return sorted(self._files)

    def get(self, name: str) -> np.ndarray:
        if name not in self._files:
            raise ConfigError(f"{self.folder}: tensor {name!r} is missing from the safetensors files")
        path = self._files[name]
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: listed in the index but missing")
        with safe_open(path, "np") as f:
            return f.get_tensor(name)


def write_safetensors(folder: str, tensors: Iterator[tuple[str, np.ndarray]], max_shard_bytes: int) -> list[str]:
    """Writes `model-0000k-of-0000n.safetensors` shards of at most `max_shard_bytes` (a tensor larger
    than that gets a shard of its own) and their index. Holds one shard in memory at a time."""
    shard: dict[str, np.ndarray] = {}
    written: list[tuple[str, list[str]]] = []  # (temporary file, tensor names)
    size = total = 0

    def flush():
        path = os.path.join(folder, f".shard-{len(written):05d}.tmp")
        save_file(shard, path, metadata={"format": "pt"})
        written.append((path, list(shard)))

    for name, tensor in tensors:
        if shard and size + tensor.nbytes > max_shard_bytes:
            flush()
            shard, size = {}, 0
        shard[name] = tensor
        size += tensor.nbytes
        total += tensor.nbytes
    if shard:
        flush()
    files, weight_map = [], {}
    for i, (path, names) in enumerate(written):
        file = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
        os.replace(path, os.path.join(folder, file))
        files.append(file)
        weight_map.update({name: file for name in names})
    with open(os.path.join(folder, INDEX_NAME), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    return files
