"""The LLaMA-family decoder in Flax: RMSNorm, RoPE, SwiGLU, grouped-query attention, scanned layers.

The model is a pure function of (params, tokens, positions, segment_ids): `Decoder(cfg).apply(
{"params": params}, ...)`. Packed rows are handled by the attention mask, which lets a token see
only earlier tokens of its own segment (segment 0 is padding and sees nothing), so a packed row
computes exactly what its examples compute alone.

Shapes: B batch, T query length, S key length, D d_model, H query heads, K kv heads, G = H // K
queries per kv head, E head size, F mlp_dim, V padded vocabulary, L layers.

Every parameter and the main activations carry logical axis names; `orca_jax.parallel.sharding`
maps them onto the (data, fsdp, tensor) mesh with one rules table. Layers are stacked on a leading
`layers` axis and run with `nn.scan`, so compile time does not grow with depth.

Decoding with a KV cache (orca_jax.model.decode) computes the same function from the same
parameters, one layer at a time; tests hold the two to the same logits.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from orca_jax.model import attention
from orca_jax.model.attention import NEG_INF
from orca_jax.model.config import DTYPES, REMAT_POLICIES, ModelConfig
from orca_jax.parallel import sharding

Array = jax.Array


def rms_norm(x: Array, scale: Array, eps: float, dtype) -> Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return normed.astype(dtype) * scale.astype(dtype)


def rope_frequencies(cfg: ModelConfig) -> Array:
    """The E/2 rotation frequencies, with Llama-3.1's scaling when `rope_scaling_factor` is set."""
    half = cfg.head_size // 2
    inv_freq = 1.0 / cfg.rope_theta ** (np.arange(half, dtype=np.float32) / half)
    if not cfg.rope_scaling_factor:
        return jnp.asarray(inv_freq)
    factor, old = cfg.rope_scaling_factor, cfg.rope_original_max_position
    low_wavelen, high_wavelen = old / cfg.rope_low_freq_factor, old / cfg.rope_high_freq_factor
    wavelen = 2 * np.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - cfg.rope_low_freq_factor) / (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor)
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    scaled = np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    return jnp.asarray(scaled.astype(np.float32))


def rope_angles(positions: Array, inv_freq: Array) -> tuple[Array, Array]:
    """cos and sin of every position's rotation angles: [B, T, 1, E/2] each."""
    angles = positions.astype(jnp.float32)[..., None, None] * inv_freq  # [B, T, 1, E/2]
    return jnp.cos(angles), jnp.sin(angles)


def rotate(x: Array, cos: Array, sin: Array) -> Array:
    """Rotary embedding in LLaMA's rotate-half layout (as in Hugging Face weights). x: [B, T, N, E]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def dense(x: Array, w: Array, in_dims: int = 1) -> Array:
    """x [B, T, *in] times w [*in, *out] -> [B, T, *out]; on CPU as one 2-D matmul over the B * T tokens.

    Why flatten on CPU: XLA:CPU canonicalizes a dot that contracts two dimensions (the weight
    gradient contracts B and T) by transposing an operand, and fuses that transpose into the producer
    as a strided write, which cost 15-25% of a CPU train step (BENCHMARKS.md). With the tokens
    flattened first, every forward and backward dot is a plain matrix product. Elsewhere the
    contraction stays over [B, T, ...]: on TPU the flattened form cost the LLaMA-13B step 0.1 s."""
    if sharding.target_platform() != "cpu":
        return jnp.tensordot(x, w, axes=in_dims)
    b, t = x.shape[:2]
    k = int(np.prod(x.shape[2:]))
    out = w.shape[in_dims:]
    y = x.reshape(b * t, k) @ w.reshape(k, int(np.prod(out)))
    return y.reshape(b, t, *out)


def _param(module: nn.Module, name: str, init, shape: tuple[int, ...], names: tuple[str, ...], dtype):
    return module.param(name, nn.with_logical_partitioning(init, names), shape, dtype)


class DecoderLayer(nn.Module):
    """Pre-norm attention then pre-norm SwiGLU MLP, each added to the residual stream."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, rope: tuple[Array, Array], segment_ids: Array, mask: Array | None
                 ) -> tuple[Array, None]:  # fmt: skip
        """x: [B, T, D]; rope: cos and sin of every position's angles; mask: [B, T, T] where a query may
        attend (None with splash, which reads the segment ids)."""
        cfg = self.config
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        d, h, kv, e, f = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size, cfg.mlp_dim
        fan_in = nn.initializers.lecun_normal
        ones = nn.initializers.ones

        # Attention.
        y = rms_norm(x, _param(self, "attn_norm", ones, (d,), ("norm",), pdtype), cfg.norm_eps, dtype)
        wq = _param(self, "wq", fan_in(in_axis=0, out_axis=(1, 2)), (d, h, e), ("embed", "heads", "head_dim"), pdtype)
        wk = _param(
            self, "wk", fan_in(in_axis=0, out_axis=(1, 2)), (d, kv, e), ("embed", "kv_heads", "head_dim"), pdtype
        )
        wv = _param(
            self, "wv", fan_in(in_axis=0, out_axis=(1, 2)), (d, kv, e), ("embed", "kv_heads", "head_dim"), pdtype
        )
        wo = _param(self, "wo", fan_in(in_axis=(0, 1), out_axis=2), (h, e, d), ("heads", "head_dim", "embed"), pdtype)
        cos, sin = rope
        q = rotate(dense(y, wq.astype(dtype)), cos, sin)
        k = rotate(dense(y, wk.astype(dtype)), cos, sin)
        v = dense(y, wv.astype(dtype))
        q = nn.with_logical_constraint(q, ("batch", "length", "act_heads", "head_dim"))
        if cfg.attention == "splash":
            out = attention.splash_attention(q, k, v, segment_ids, cfg.sliding_window)
        else:
            attend = attention.cudnn_attention if cfg.attention == "cudnn" else attention.xla_attention
            out = attend(q, k, v, mask)
        x = x + dense(out, wo.astype(dtype), in_dims=2)
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))

        # SwiGLU MLP.
        y = rms_norm(x, _param(self, "mlp_norm", ones, (d,), ("norm",), pdtype), cfg.norm_eps, dtype)
        w_gate = _param(self, "w_gate", fan_in(), (d, f), ("embed", "mlp"), pdtype)
        w_up = _param(self, "w_up", fan_in(), (d, f), ("embed", "mlp"), pdtype)
        w_down = _param(self, "w_down", fan_in(), (f, d), ("mlp", "embed"), pdtype)
        hidden = jax.nn.silu(dense(y, w_gate.astype(dtype))) * dense(y, w_up.astype(dtype))
        hidden = nn.with_logical_constraint(hidden, ("batch", "length", "act_mlp"))
        x = x + dense(hidden, w_down.astype(dtype))
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
        return x, None  # (carry, per-layer output) for nn.scan


class Decoder(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, tokens: Array, positions: Array, segment_ids: Array) -> Array:
        """tokens, positions, segment_ids: [B, T] int32 -> float32 logits [B, T, V]."""
        cfg = self.config
        dtype, pdtype = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
        v, d = cfg.padded_vocab_size, cfg.d_model
        embedding = _param(
            self, "embedding", nn.initializers.normal(1.0), (v, d), ("table_vocab", "table_embed"), pdtype
        )
        x = jnp.take(embedding, tokens, axis=0).astype(dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))

        # The rotation angles and the attention mask are the same in every layer: made once here and
        # passed in. (XLA had already hoisted most of that work out of the layer loop: at the mini-Orca
        # shapes the step time did not change measurably; BENCHMARKS.md.)
        rope = rope_angles(positions, rope_frequencies(cfg))
        mask = None
        if cfg.attention != "splash":
            slots = jnp.arange(tokens.shape[1])
            mask = attention.attention_mask(slots[None], segment_ids, slots, segment_ids, cfg.sliding_window)

        block = DecoderLayer
        if cfg.remat != "none":
            block = nn.remat(block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
        layers = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
            length=cfg.num_layers,
            unroll=min(cfg.scan_unroll, cfg.num_layers),
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, name="layers")
        x, _ = layers(x, rope, segment_ids, mask)

        final_norm = _param(self, "final_norm", nn.initializers.ones, (d,), ("norm",), pdtype)
        if cfg.tie_embeddings:
            head = embedding.T
        else:
            head = _param(self, "lm_head", nn.initializers.lecun_normal(), (d, v), ("embed", "vocab"), pdtype)
        return output_logits(cfg, x, final_norm, head)


def output_logits(cfg: ModelConfig, x: Array, final_norm: Array, head: Array) -> Array:
    """The final RMSNorm and the output projection (head: [D, V]) -> float32 logits [B, T, V]."""
    dtype = DTYPES[cfg.dtype]
    x = rms_norm(x, final_norm, cfg.norm_eps, dtype)
    logits = dense(x, head.astype(dtype)).astype(jnp.float32)
    logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))
    # Padded vocabulary rows, and ids below the offset, are never predicted. (Decided at trace
    # time: most models have neither, and the mask costs a pass over the largest activation.)
    if cfg.id_offset or cfg.padded_vocab_size != cfg.vocab_size:
        ids = jnp.arange(cfg.padded_vocab_size)
        logits = jnp.where((ids >= cfg.id_offset) & (ids < cfg.vocab_size), logits, NEG_INF)
    return logits


def init_params(model: Decoder, rng: jax.Array):
    """Fresh parameters, boxed with their logical axis names (nn.LogicallyPartitioned)."""
    tokens = jnp.ones((1, 8), jnp.int32)
    # The parameters do not depend on the attention implementation, and the splash kernel cannot
    # trace 8 tokens (its blocks are multiples of 128): initialize through the XLA path.
    model = Decoder(dataclasses.replace(model.config, attention="xla"))
    return model.init(rng, tokens, tokens, tokens)["params"]


def abstract_params(model: Decoder):
    """Shapes and logical axis names of the parameters, without allocating them."""
    return jax.eval_shape(lambda rng: init_params(model, rng), jax.random.key(0))
