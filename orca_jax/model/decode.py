"""Batched decoding with a KV cache: one prefill over the prompts, then a compiled loop; greedy, or
sampling with a temperature and nucleus top-p.

Prompts are left-padded (0 = padding) so that every row's next token goes to the same cache slot;
each row keeps its own positions, which count only its real tokens. Padding slots carry segment 0
and are never attended to. A row stops at EOS; the loop stops when every row has, or after
`max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from orca_jax.model.llama import Decoder, init_cache
from orca_jax.parallel import sharding


def left_pad(prompts: Sequence[Sequence[int]], length: int) -> np.ndarray:
    out = np.zeros((len(prompts), length), np.int32)
    for i, p in enumerate(prompts):
        if len(p) > length:
            raise ValueError(f"prompt {i} has {len(p)} tokens, more than {length}")
        if p:
            out[i, length - len(p) :] = p
    return out


def next_token(logits: jax.Array, rng: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """Greedy when temperature is 0; else a sample at that temperature from the smallest set of
    tokens whose probability reaches top_p (nucleus sampling)."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # The cutoff is the logit of the first token at which the kept mass reaches top_p.
        cutoff_index = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@partial(jax.jit, static_argnames=("model", "max_new_tokens", "eos_id", "temperature", "top_p"))
def _generate(model: Decoder, params, prompts: jax.Array, rng: jax.Array, max_new_tokens: int, eos_id: int,
              temperature: float, top_p: float) -> jax.Array:  # fmt: skip
    batch, prompt_len = prompts.shape
    segments = (prompts != 0).astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(segments, axis=1) - 1, 0)
    cache = init_cache(model.config, batch, prompt_len + max_new_tokens)
    logits, cache = model.apply({"params": params}, prompts, positions, segments, cache=cache, cache_index=0)
    rng, first_rng = jax.random.split(rng)
    first = next_token(logits[:, -1], first_rng, temperature, top_p)

    def cond(carry):
        i, _, _, _, done, _, _, _ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, cache, token, position, done, out, lengths, rng = carry
        out = out.at[:, i].set(jnp.where(done, 0, token))
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | (token == eos_id)
        logits, cache = model.apply(
            {"params": params}, token[:, None], position[:, None], jnp.ones((batch, 1), jnp.int32),
            cache=cache, cache_index=prompt_len + i,
        )  # fmt: skip
        rng, step_rng = jax.random.split(rng)
        token = next_token(logits[:, -1], step_rng, temperature, top_p)
        return i + 1, cache, token, position + 1, done, out, lengths, rng

    out = jnp.zeros((batch, max_new_tokens), jnp.int32)
    done = jnp.zeros((batch,), bool)
    lengths = jnp.zeros((batch,), jnp.int32)
    carry = (jnp.int32(0), cache, first, positions[:, -1] + 1, done, out, lengths, rng)
    _, _, _, _, _, out, lengths, _ = jax.lax.while_loop(cond, body, carry)
    return out, lengths


def generate(
    model: Decoder,
    params,
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
    """Continuations of `prompts` (token lists, BOS included), each cut after its EOS. Greedy by
    default; `temperature` > 0 samples, with nucleus `top_p`.

    The batch is padded to a multiple of the mesh's batch shards and the prompt length to a multiple
    of `pad_to`, so a handful of shapes compile once each."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    n = len(prompts)
    rows = -(-n // shards) * shards
    length = -(-max(len(p) for p in prompts) // pad_to) * pad_to
    padded = list(prompts) + [prompts[0]] * (rows - n)
    host_tokens = left_pad(padded, length)  # every host holds all prompts and places its own shards
    tokens = jax.make_array_from_callback(host_tokens.shape, sharding.batch_sharding(mesh), lambda i: host_tokens[i])
    generated, lengths = _generate(
        model, params, tokens, jax.random.key(seed), max_new_tokens, eos_id, float(temperature), float(top_p)
    )
    out = np.asarray(multihost_utils.process_allgather(generated, tiled=True))[:n]
    lengths = np.asarray(multihost_utils.process_allgather(lengths, tiled=True))[:n]
    return [row[:length].tolist() for row, length in zip(out, lengths, strict=True)]
