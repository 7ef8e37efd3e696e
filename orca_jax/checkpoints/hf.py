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

import ml_dtypes
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


def config_to_hf(cfg: ModelConfig, *, bos_id: int, eos_id: int, torch_dtype: str = "float32") -> dict:
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


def params_to_hf(params: dict, cfg: ModelConfig, dtype=None) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, tensor) pairs for the parameters, padded vocabulary rows removed; each tensor in
    `dtype`, or in the dtype it is held in when None."""
    lo, v = cfg.id_offset, cfg.vocab_size

    def out(x) -> np.ndarray:
        x = np.ascontiguousarray(x)
        return x if dtype is None else x.astype(dtype)

    yield "model.embed_tokens.weight", out(np.asarray(params["embedding"])[lo:v])
    for i in range(cfg.num_layers):
        for name, hf in LAYER_PARAMS.items():
            yield f"model.layers.{i}.{hf}", out(_to_hf(name, np.asarray(params["layers"][name][i]), cfg))
    yield "model.norm.weight", out(np.asarray(params["final_norm"]))
    if not cfg.tie_embeddings:
        yield "lm_head.weight", out(np.asarray(params["lm_head"])[:, lo:v].T)


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
        header, data_start = _read_header(path)
        entry = header.get(name)
        if entry is None:
            raise ConfigError(f"{path}: tensor {name!r} is listed in the index but not in this file")
        start, end = entry["data_offsets"]
        dtype = _dtype_of(entry["dtype"], path, name)
        with open(path, "rb") as f:
            f.seek(data_start + start)
            raw = f.read(end - start)
        return np.frombuffer(raw, dtype).reshape(entry["shape"]).copy()

    def dtypes(self) -> dict[str, np.dtype]:
        """Each tensor's stored dtype, from the file headers (no tensor data is read)."""
        out = {}
        for path in sorted(set(self._files.values())):
            header, _ = _read_header(path)
            out.update({n: _dtype_of(e["dtype"], path, n) for n, e in header.items() if n in self._files})
        return out


# safetensors' numpy reader has no bfloat16 (numpy lacks it), so files are read from their
# documented layout: an 8-byte little-endian header length, a JSON header of
# {name: {dtype, shape, data_offsets}}, then the raw little-endian tensor bytes.
SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


def _read_header(path: str) -> tuple[dict, int]:
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a safetensors file ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + size


def _dtype_of(code: str, path: str, name: str) -> np.dtype:
    if code not in SAFETENSORS_DTYPES:
        raise ConfigError(f"{path}: tensor {name!r} has dtype {code}, which orca_jax does not read")
    return np.dtype(SAFETENSORS_DTYPES[code])


def weights_dtype(dtypes: dict[str, np.dtype]) -> str:
    """The ModelConfig dtype ("float32" or "bfloat16") that holds every floating-point tensor
    exactly: bfloat16 when all are bfloat16, else float32 (float16 has no ModelConfig dtype, and
    float32 holds its values exactly where bfloat16 would round them)."""
    floats = {np.dtype(d) for d in dtypes.values() if np.issubdtype(d, np.floating) or d == ml_dtypes.bfloat16}
    return "bfloat16" if floats == {np.dtype(ml_dtypes.bfloat16)} else "float32"


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
