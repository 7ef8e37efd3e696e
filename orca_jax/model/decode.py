"""Batched decoding with a KV cache: one prefill over the prompts, then a compiled loop; greedy, or
sampling with a temperature and nucleus top-p.

Prompts are left-padded (0 = padding) so that every row's next token goes to the same cache slot;
each row keeps its own positions, which count only its real tokens. Padding slots carry segment 0
and are never attended to. A row stops at EOS; the loop stops when every row has, or after
`max_new_tokens`.

The cached forward is its own small function of the same parameters (`model.apply` is the training
path: layers under `nn.scan`, no cache). `prepare` rearranges the parameters once per model (not
once per batch): each layer's weights sliced from the stacked tree, cast to the compute dtype, q/k/v
and gate/up fused into one matrix each, so a step runs a few wide matmuls per layer and copies
nothing; each layer's cache is its own array, updated in place inside the loop. (Through the
training scan, every step copied the stacked cache and every layer's weights: half the speed at
batch 16, BENCHMARKS.md.) The prefill attends within the prompts (not to the empty slots) and runs
the last layer's attention output and MLP, and the logits, for the last prompt position only. The
loop runs no forward pass for the last token. Compile time grows linearly with depth, once per
(batch, length) shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from orca_jax.model import attention
from orca_jax.model.config import DTYPES, ModelConfig
from orca_jax.model.llama import Decoder, output_logits, rms_norm, rope_angles, rope_frequencies, rotate
from orca_jax.parallel import sharding


def init_cache(cfg: ModelConfig, batch_size: int, max_length: int) -> dict:
    """An empty KV cache for `max_length` slots: per layer, keys and values [B, K, S, E] in the
    compute dtype (head-major, so each head's keys are contiguous for the dot), and the segment id
    of every slot (0: empty or padding, never attended to)."""
    shape = (batch_size, cfg.kv_heads, max_length, cfg.head_size)
    zeros = lambda: jnp.zeros(shape, DTYPES[cfg.dtype])  # noqa: E731
    return {
        "layers": [{"k": zeros(), "v": zeros()} for _ in range(cfg.num_layers)],
        "segments": jnp.zeros((batch_size, max_length), jnp.int32),
    }


def decode_weights(cfg: ModelConfig, params) -> dict:
    """The parameters rearranged for decoding: per layer, q/k/v as one [D, (H + 2K) E] matrix,
    gate/up as one [D, 2F], the output projection as [H E, D], all in the compute dtype."""
    dtype = DTYPES[cfg.dtype]
    d, h, kv, e = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size
    layers = []
    for i in range(cfg.num_layers):
        p = jax.tree.map(lambda a, i=i: a[i], params["layers"])
        qkv = [p["wq"].reshape(d, h * e), p["wk"].reshape(d, kv * e), p["wv"].reshape(d, kv * e)]
        layers.append({
            "attn_norm": p["attn_norm"], "mlp_norm": p["mlp_norm"],
            "wqkv": jnp.concatenate(qkv, axis=1).astype(dtype), "wo": p["wo"].reshape(h * e, d).astype(dtype),
            "w_gate_up": jnp.concatenate([p["w_gate"], p["w_up"]], axis=1).astype(dtype),
            "w_down": p["w_down"].astype(dtype),
        })  # fmt: skip
    head = params["embedding"].T if cfg.tie_embeddings else params["lm_head"]
    return {"embedding": params["embedding"], "layers": layers, "final_norm": params["final_norm"], "head": head}


@partial(jax.jit, static_argnames="model")
def _prepare(model: Decoder, params) -> dict:
    return decode_weights(model.config, params)


def prepare(model: Decoder, params) -> dict:
    """`params` rearranged for `generate` (`decode_weights`), on the params' devices. Do it once per
    model and reuse it for every batch: it copies every weight (0.10-0.15 s for `bench_small`, whose
    batch-16 call of 64 new tokens takes about 2 s, BENCHMARKS.md). It holds a second copy of the
    weights while it lives (as `generate` did inside every call before)."""
    return _prepare(model, nn.meta.unbox(params))


def _layer(cfg: ModelConfig, w: dict, x: jax.Array, rope: tuple, mask: jax.Array, cache_index, cache: dict,
           prefill: bool, last_only: bool):  # fmt: skip
    """One decoder layer (llama.DecoderLayer's function) writing its keys and values into `cache`.
    `prefill`: the cache was empty, so the new tokens attend to their own keys only (not to the empty
    slots). `last_only`: only the last position's output is wanted (the prefill's last layer)."""
    dtype = DTYPES[cfg.dtype]
    b, t, _ = x.shape
    h, kv, e = cfg.num_heads, cfg.kv_heads, cfg.head_size
    y = rms_norm(x, w["attn_norm"], cfg.norm_eps, dtype)
    q, k, v = jnp.split(y @ w["wqkv"], [h * e, (h + kv) * e], axis=-1)
    q = rotate(q.reshape(b, t, h, e), *rope)
    # [B, T, K * E] -> [B, K, T, E], the cache's head-major layout
    k = rotate(k.reshape(b, t, kv, e), *rope).transpose(0, 2, 1, 3)
    v = v.reshape(b, t, kv, e).transpose(0, 2, 1, 3)

    def write(slots: jax.Array, new: jax.Array) -> jax.Array:  # new [B, K, T, E] at slots cache_index..
        return jax.lax.dynamic_update_slice(slots, new.astype(slots.dtype), (0, 0, cache_index, 0))

    cache = {"k": write(cache["k"], k), "v": write(cache["v"], v)}
    if not prefill:
        k, v = cache["k"].astype(dtype), cache["v"].astype(dtype)
    if last_only:
        x, q, mask = x[:, -1:], q[:, -1:], mask[:, -1:]
    x = x + attention.xla_attention(q, k, v, mask, head_major=True).reshape(x.shape[0], -1, h * e) @ w["wo"]
    gate, up = jnp.split(rms_norm(x, w["mlp_norm"], cfg.norm_eps, dtype) @ w["w_gate_up"], 2, axis=-1)
    return x + (jax.nn.silu(gate) * up) @ w["w_down"], cache


def rope_table(cfg: ModelConfig, length: int) -> tuple[jax.Array, jax.Array]:
    """cos and sin for positions 0..length-1, [length, 1, E/2] each. Made once per `generate` call so
    that the prefill and every step look rows up: computed in place, XLA fuses the sines and cosines
    into each layer's rotations and recomputes them per head."""
    cos, sin = rope_angles(jnp.arange(length)[None], rope_frequencies(cfg))
    return cos[0], sin[0]


def forward_with_cache(
    cfg: ModelConfig,
    weights: dict,
    tokens: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
    cache: dict,
    cache_index: jax.Array | int,
    last_only: bool = False,
    rope_lookup: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, dict]:
    """The model's forward for tokens [B, T] written at cache slots cache_index..cache_index+T-1
    (weights from `decode_weights`): float32 logits [B, T, V] (or [B, 1, V] for the last position
    with `last_only`) and the updated cache. Equals `model.apply` over the whole sequence. A literal
    `cache_index` of 0 means an empty cache: the tokens attend among themselves only. `rope_lookup`
    (`rope_table`'s cos and sin) is looked up by position instead of computing the rotations' angles."""
    x = jnp.take(weights["embedding"], tokens, axis=0).astype(DTYPES[cfg.dtype])
    t = tokens.shape[1]
    prefill = isinstance(cache_index, int) and cache_index == 0
    q_slots = cache_index + jnp.arange(t)
    kv_segments = jax.lax.dynamic_update_slice(cache["segments"], segment_ids, (0, cache_index))
    if prefill:
        mask = attention.attention_mask(q_slots[None], segment_ids, q_slots, segment_ids, cfg.sliding_window)
    else:
        kv_slots = jnp.arange(kv_segments.shape[1])
        mask = attention.attention_mask(q_slots[None], segment_ids, kv_slots, kv_segments, cfg.sliding_window)
    if rope_lookup is None:
        rope = rope_angles(positions, rope_frequencies(cfg))
    else:
        rope = tuple(jnp.take(table, positions, axis=0) for table in rope_lookup)
    new_layers = []
    for i, (w, layer_cache) in enumerate(zip(weights["layers"], cache["layers"], strict=True)):
        last = last_only and i == cfg.num_layers - 1
        x, layer_cache = _layer(cfg, w, x, rope, mask, cache_index, layer_cache, prefill, last)
        new_layers.append(layer_cache)
    logits = output_logits(cfg, x[:, -1:] if last_only else x, weights["final_norm"], weights["head"])
    return logits, {"layers": new_layers, "segments": kv_segments}


def left_pad(prompts: Sequence[Sequence[int]], length: int) -> np.ndarray:
    out = np.zeros((len(prompts), length), np.int32)
    for i, p in enumerate(prompts):
        if len(p) > length:
            raise ValueError(f"prompt {i} has {len(p)} tokens, more than {length}")
        if p:
            out[i, length - len(p) :] = p
    return out


def greedy(logits: jax.Array) -> jax.Array:
    """argmax over the last axis of [B, V] (the first of equal maxima). In two stages where V divides
    into rows of 128: XLA:CPU's (value, index) reduce over 32000 columns takes several times as long
    as a max over 128-wide rows and two short argmaxes (benchmarks/decode_parts.py)."""
    b, v = logits.shape
    if v % 128:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    rows = logits.reshape(b, v // 128, 128)
    row = jnp.argmax(jnp.max(rows, axis=-1), axis=-1)  # the first row holding the maximum
    within = jnp.argmax(jnp.take_along_axis(rows, row[:, None, None], axis=1)[:, 0], axis=-1)
    return (row * 128 + within).astype(jnp.int32)


def next_token(logits: jax.Array, rng: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """Greedy when temperature is 0; else a sample at that temperature from the smallest set of
    tokens whose probability reaches top_p (nucleus sampling)."""
    if temperature == 0.0:
        return greedy(logits)
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # The cutoff is the logit of the first token at which the kept mass reaches top_p.
        cutoff_index = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _generate(model: Decoder, weights: dict, prompts: jax.Array, rng: jax.Array, max_new_tokens: int, eos_id: int,
              temperature: float, top_p: float) -> jax.Array:  # fmt: skip
    batch, prompt_len = prompts.shape
    segments = (prompts != 0).astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(segments, axis=1) - 1, 0)
    forward = partial(forward_with_cache, model.config, weights)
    table = rope_table(model.config, prompt_len + max_new_tokens)
    cache = init_cache(model.config, batch, prompt_len + max_new_tokens)
    logits, cache = forward(prompts, positions, segments, cache, 0, last_only=True, rope_lookup=table)
    rng, first_rng = jax.random.split(rng)
    first = next_token(logits[:, -1], first_rng, temperature, top_p)

    def emit(i, token, done, out, lengths):  # token [B] as output column i (0 after a row's EOS)
        out = out.at[:, i].set(jnp.where(done, 0, token))
        return out, lengths + (~done).astype(jnp.int32), done | (token == eos_id)

    def cond(carry):
        i, _, _, _, done, _, _, _ = carry
        return (i < max_new_tokens - 1) & ~jnp.all(done)

    def body(carry):
        i, cache, token, position, done, out, lengths, rng = carry
        out, lengths, done = emit(i, token, done, out, lengths)
        ones = jnp.ones((batch, 1), jnp.int32)
        logits, cache = forward(token[:, None], position[:, None], ones, cache, prompt_len + i, rope_lookup=table)
        rng, step_rng = jax.random.split(rng)
        token = next_token(logits[:, -1], step_rng, temperature, top_p)
        return i + 1, cache, token, position + 1, done, out, lengths, rng

    out = jnp.zeros((batch, max_new_tokens), jnp.int32)
    done = jnp.zeros((batch,), bool)
    lengths = jnp.zeros((batch,), jnp.int32)
    carry = (jnp.int32(0), cache, first, positions[:, -1] + 1, done, out, lengths, rng)
    i, _, token, _, done, out, lengths, _ = jax.lax.while_loop(cond, body, carry)
    out, lengths, _ = emit(i, token, done, out, lengths)  # the last token needs no forward pass
    return out, lengths


# On CPU, XLA's default YNNPACK dot fusions run a decode step's small-batch matmuls slower than its
# Eigen dots: turning them off (sharding.CPU_COMPILER_OPTIONS) took benchmarks/decode.py from 359 to 422
# tokens/s at batch 16 and from 81 to 92 at batch 1 (best of 3, idle 2-core machine).
_STATIC = ("model", "max_new_tokens", "eos_id", "temperature", "top_p")
_generate_jit = jax.jit(_generate, static_argnames=_STATIC)
_generate_cpu = jax.jit(_generate, static_argnames=_STATIC, compiler_options=sharding.CPU_COMPILER_OPTIONS)


def generate(
    model: Decoder,
    weights: dict,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int,
    mesh: Mesh,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    pad_to: int = 64,
) -> list[list[int]]:
    """Continuations of `prompts` (token lists, BOS included), each cut after its EOS, from `weights`
    (`prepare(model, params)`). Greedy by default; `temperature` > 0 samples, with nucleus `top_p`.

    The batch is padded to a multiple of the mesh's batch shards and the prompt length to a multiple
    of `pad_to`, so a handful of shapes compile once each."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    shards = sharding.batch_shards(mesh)
    n = len(prompts)
    rows = -(-n // shards) * shards
    length = -(-max(len(p) for p in prompts) // pad_to) * pad_to
    padded = list(prompts) + [prompts[0]] * (rows - n)
    host_tokens = left_pad(padded, length)  # every host holds all prompts and places its own shards
    tokens = jax.make_array_from_callback(host_tokens.shape, sharding.batch_sharding(mesh), lambda i: host_tokens[i])
    if not isinstance(weights.get("layers"), list):
        raise TypeError("generate takes decode weights: pass decode.prepare(model, params), not the params")
    compiled = _generate_cpu if mesh.devices.flat[0].platform == "cpu" else _generate_jit
    generated, lengths = compiled(
        model, weights, tokens, jax.random.key(seed), max_new_tokens, eos_id, float(temperature), float(top_p)
    )
    out = np.asarray(multihost_utils.process_allgather(generated, tiled=True))[:n]
    lengths = np.asarray(multihost_utils.process_allgather(lengths, tiled=True))[:n]
    return [row[:length].tolist() for row, length in zip(out, lengths, strict=True)]
