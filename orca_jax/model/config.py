"""The decoder's hyperparameters, and the shapes that follow from them."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from orca_jax.errors import ConfigError

# What the backward pass recomputes per layer: "none" keeps every activation; "full" recomputes the
# whole layer; "save_dots" keeps the matmul outputs and recomputes the rest.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
ATTENTION_IMPLEMENTATIONS = ("xla", "splash", "cudnn")
# The dtypes a parameter or activation may have, by the name configs and flags use.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Fields that change only how the model runs, not what it computes: a run may start from a checkpoint
# that differs in these, and an export does not record them as part of the model.
RUNTIME_FIELDS = ("param_dtype", "dtype", "remat", "attention", "scan_unroll")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A LLaMA-family decoder: RMSNorm, RoPE, SwiGLU MLP, grouped-query attention, no biases."""

    vocab_size: int = 32000  # ids the tokenizer produces; the table is padded past it
    d_model: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 0  # 0 means num_heads (multi-head attention)
    head_dim: int = 0  # 0 means d_model // num_heads
    mlp_dim: int = 11008
    rope_theta: float = 10000.0
    # Llama-3.1's RoPE frequency scaling: 0 disables it; else long wavelengths are divided by it.
    rope_scaling_factor: float = 0.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    sliding_window: int = 0  # 0: full causal attention; else each token sees the last N (Mistral)
    attention: str = "xla"  # xla | splash (TPU kernel) | cudnn (GPU kernel); see model/attention.py
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    # Ids below this are not tokens (a tokenizer.json's ids shifted up so that 0 is padding) and are
    # never predicted.
    id_offset: int = 0
    vocab_multiple: int = 128  # pad the embedding rows to a multiple of this, for sharding
    param_dtype: str = "float32"  # master weights
    dtype: str = "bfloat16"  # activations and matmuls
    remat: str = "none"  # none | full | save_dots: what the backward pass recomputes per layer
    # Layers per iteration of the layer scan. 1 is a loop (compile time independent of depth);
    # num_layers is straight-line code, which XLA schedules across layers (faster for small models on
    # CPU; BENCHMARKS.md). The parameters are stacked either way, so checkpoints do not change.
    scan_unroll: int = 1

    def __post_init__(self):
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(f"ModelConfig.attention: {self.attention!r} is not one of {ATTENTION_IMPLEMENTATIONS}")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"ModelConfig.remat: {self.remat!r} is not one of {tuple(REMAT_POLICIES)}")
        for field in ("param_dtype", "dtype"):
            if getattr(self, field) not in DTYPES:
                raise ConfigError(f"ModelConfig.{field}: {getattr(self, field)!r} is not one of {sorted(DTYPES)}")
        if self.scan_unroll < 1:
            raise ConfigError(f"ModelConfig.scan_unroll: {self.scan_unroll} must be at least 1")
        if self.num_heads % self.kv_heads:
            raise ConfigError(
                f"ModelConfig: num_heads {self.num_heads} is not a multiple of num_kv_heads {self.kv_heads}"
            )
        if self.head_size % 2:
            raise ConfigError(f"ModelConfig: head size {self.head_size} must be even for RoPE")

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.d_model // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    def num_params(self) -> int:
        """Parameter count, padded embedding rows included."""
        d, v = self.d_model, self.padded_vocab_size
        attn = d * self.head_size * (2 * self.num_heads + 2 * self.kv_heads)
        mlp = 3 * d * self.mlp_dim
        per_layer = attn + mlp + 2 * d
        return v * d * (1 if self.tie_embeddings else 2) + self.num_layers * per_layer + d

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self) -> ModelConfig:
        """The same model with its defaults (0 = derived) spelled out, for comparing configs."""
        return dataclasses.replace(self, num_kv_heads=self.kv_heads, head_dim=self.head_size)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"ModelConfig: unknown fields {unknown}")
        return cls(**d)
