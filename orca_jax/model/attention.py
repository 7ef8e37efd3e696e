"""Attention with a causal, same-segment mask, in three implementations chosen by `ModelConfig.attention`.

    xla     einsums and a softmax; runs everywhere (the CPU default) and, over the head-major KV
            cache, serves every decode step.
    splash  the Pallas splash-attention kernel on TPU, which takes segment ids directly and skips
            fully masked blocks. Run through `shard_map` over the mesh (batch split over data and
            fsdp, heads over tensor). On CPU it runs in Pallas interpret mode, which is how the tests
            check it against `xla`.
    cudnn   `jax.nn.dot_product_attention`'s cuDNN flash path on NVIDIA GPUs (bf16/fp16 only); the
            packed-segment mask is passed as its boolean mask.

Every implementation computes the same function: a query sees keys of its own segment (segment 0 is
padding and sees nothing) at earlier or equal slots, and with a sliding window only the last
`window` slots.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from orca_jax.errors import ConfigError
from orca_jax.parallel import sharding

Array = jax.Array
NEG_INF = -1e30  # masked scores; finite so fully masked (padding) rows stay NaN-free
IMPLEMENTATIONS = ("xla", "splash", "cudnn")


def attention_mask(q_slots: Array, q_segments: Array, kv_slots: Array, kv_segments: Array, window: int = 0) -> Array:
    """[B, T, S] True where a query may attend: an earlier-or-same slot of the same, real segment."""
    causal = kv_slots[None, None, :] <= q_slots[:, :, None]
    if window:
        causal &= q_slots[:, :, None] - kv_slots[None, None, :] < window
    same_segment = kv_segments[:, None, :] == q_segments[:, :, None]
    return causal & same_segment & (kv_segments[:, None, :] != 0)


def xla_attention(q: Array, k: Array, v: Array, mask: Array, head_major: bool = False) -> Array:
    """q: [B, T, H, E], k and v: [B, S, K, E], mask: [B, T, S] -> [B, T, H, E].

    head_major: k and v are [B, K, S, E], the KV cache's layout. With each head's keys contiguous, a
    decode step's dots need no transpose of the cache (5x faster at batch 16 on CPU).

    The dots are [B, K, G, T, S] (K kv heads, G query heads each). For multi-head attention on CPU
    they drop the unit G axis, [B, H, T, S], which XLA:CPU runs faster; the TPU compiler tiles the
    5-D form better (the 4-D form cost the LLaMA-13B v5p-128 step 0.1 s; BENCHMARKS.md)."""
    b, t, h, e = q.shape
    kv_spec = "bkse" if head_major else "bske"
    kv = k.shape[1] if head_major else k.shape[2]
    if kv == h and sharding.target_platform() == "cpu":
        scores = jnp.einsum(f"btke,{kv_spec}->bkts", q, k)
        probs = _masked_softmax(scores, mask[:, None], e).astype(v.dtype)
        return jnp.einsum(f"bkts,{kv_spec}->btke", probs, v)
    q = q.reshape(b, t, kv, h // kv, e)
    scores = jnp.einsum(f"btkge,{kv_spec}->bkgts", q, k)
    probs = _masked_softmax(scores, mask[:, None, None], e).astype(v.dtype)
    return jnp.einsum(f"bkgts,{kv_spec}->btkge", probs, v).reshape(b, t, h, e)


def _masked_softmax(scores: Array, mask: Array, head_size: int) -> Array:
    """Softmax over the last axis (S) of scores / sqrt(E), in float32, where mask (broadcast) allows."""
    scores = scores.astype(jnp.float32) / np.sqrt(head_size).astype(np.float32)
    scores = jnp.where(mask, scores, NEG_INF)
    return jax.nn.softmax(scores, axis=-1)


def cudnn_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    if jax.default_backend() != "gpu":
        raise ConfigError(
            f"ModelConfig.attention = 'cudnn' needs an NVIDIA GPU; this backend is {jax.default_backend()}"
        )
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="cudnn")


def _splash_local(q: Array, k: Array, v: Array, segments: Array, *, window: int, interpret: bool) -> Array:
    """Splash attention on one device's shard: q [b, T, h, E], k and v [b, T, kv, E], segments [b, T]."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    b, t, h, e = q.shape
    kv = k.shape[2]
    groups = h // kv
    head_mask = sm.LocalMask((t, t), (window - 1, 0), offset=0) if window else sm.CausalMask((t, t))
    block = min(512, t)
    sizes = sk.BlockSizes(
        block_q=block, block_kv_compute=block, block_kv=block, block_q_dkv=block,
        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block,
    )  # fmt: skip
    mask = sm.MultiHeadMask([head_mask] * groups)
    maker = sk.make_splash_mha if groups == 1 else sk.make_splash_mqa
    kernel = maker(mask, head_shards=1, q_seq_shards=1, block_sizes=sizes, interpret=interpret)

    q = (q / np.sqrt(e).astype(q.dtype)).reshape(b, t, kv, groups, e).transpose(0, 2, 3, 1, 4)  # b kv g T E
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # b kv T E

    def one_group(q, k, v, seg):  # q [g, T, E], k and v [T, E] (one kv head)
        ids = sk.SegmentIds(q=seg, kv=seg)
        if groups == 1:
            return kernel(q, k[None], v[None], segment_ids=ids)
        return kernel(q, k, v, segment_ids=ids)

    per_example = jax.vmap(one_group, in_axes=(0, 0, 0, None))  # over kv heads
    out = jax.vmap(per_example)(q, k, v, segments)  # over the batch: b kv g T E
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)


def splash_attention(q: Array, k: Array, v: Array, segments: Array, window: int = 0) -> Array:
    """Self-attention over packed rows (no KV cache). Under a mesh, each device runs the kernel on
    its own batch rows and heads."""
    # Interpret mode only where the devices are CPUs: the mesh's devices, not the default backend,
    # so that a step compiled on a CPU host for a TPU topology (orca-compile) gets the real kernel.
    mesh = jax.sharding.get_abstract_mesh()
    local = functools.partial(_splash_local, window=window, interpret=sharding.target_platform() == "cpu")
    if mesh.empty:
        return local(q, k, v, segments)
    # Rows split as the rules table splits "batch", heads as it splits "act_heads".
    heads = nn.logical_to_mesh_axes(("batch", "length", "act_heads", "head_dim"), sharding.LOGICAL_AXIS_RULES)
    rows = nn.logical_to_mesh_axes(("batch", "length"), sharding.LOGICAL_AXIS_RULES)
    return jax.shard_map(local, mesh=mesh, in_specs=(heads, heads, heads, rows), out_specs=heads, check_vma=False)(
        q, k, v, segments
    )
