"""The attention implementations compute the same function (splash runs in Pallas interpret mode on CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orca_jax.errors import ConfigError
from orca_jax.model import attention
from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder
from orca_jax.model.loss import token_losses
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig, strip_axis_names


def packed_inputs(batch=2, length=256, heads=4, kv_heads=2, head_size=32, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(batch, length, heads, head_size)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(batch, length, kv_heads, head_size)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(batch, length, kv_heads, head_size)), jnp.float32)
    segments = np.zeros((batch, length), np.int32)
    segments[:, :90], segments[:, 90:200] = 1, 2  # two examples, then padding
    segments[1, 150:] = 0
    return q, k, v, jnp.asarray(segments)


def xla(q, k, v, segments, window=0):
    slots = jnp.broadcast_to(jnp.arange(q.shape[1]), segments.shape)
    return attention.xla_attention(q, k, v, attention.attention_mask(slots, segments, slots[0], segments, window))


def test_mask_semantics():
    slots = jnp.arange(5)[None]
    segments = jnp.array([[1, 1, 2, 2, 0]])
    mask = attention.attention_mask(slots, segments, slots[0], segments)
    assert mask[0].astype(int).tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ]
    windowed = attention.attention_mask(slots, jnp.ones((1, 5), int), slots[0], jnp.ones((1, 5), int), window=2)
    assert windowed[0, 4].astype(int).tolist() == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("kv_heads, window", [(4, 0), (2, 0), (1, 0), (2, 64)])
def test_splash_equals_xla_values_and_gradients(kv_heads, window):
    q, k, v, segments = packed_inputs(kv_heads=kv_heads)
    real = (segments > 0)[..., None, None]

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.where(real, fn(q, k, v, segments, window), 0.0) ** 2)

    splash = lambda q, k, v, s, w: attention.splash_attention(q, k, v, s, w)  # noqa: E731
    out_splash, out_xla = splash(q, k, v, segments, window), xla(q, k, v, segments, window)
    assert not np.isnan(np.asarray(out_splash)).any()
    np.testing.assert_allclose(np.where(real, out_splash, 0), np.where(real, out_xla, 0), atol=2e-5)
    grads_splash = jax.grad(loss(splash), argnums=(0, 1, 2))(q, k, v)
    grads_xla = jax.grad(loss(xla), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(grads_splash, grads_xla, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_sharded_splash_equals_xla(devices):
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2), devices)
    q, k, v, segments = packed_inputs(batch=4)
    with sharding.use_mesh(mesh):
        out = jax.jit(attention.splash_attention)(q, k, v, segments)
    real = (segments > 0)[..., None, None]
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, xla(q, k, v, segments), 0), atol=2e-5)


def test_model_loss_is_the_same_with_splash_attention():
    base = ModelConfig(vocab_size=260, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
                       dtype="float32")  # fmt: skip
    tokens = jnp.ones((1, 8), jnp.int32)
    params = strip_axis_names(jax.jit(Decoder(base).init)(jax.random.key(0), tokens, tokens, tokens)["params"])
    rng = np.random.default_rng(1)
    segments = np.repeat([[1] * 100 + [2] * 100 + [0] * 56], 2, axis=0).astype(np.int32)
    batch = {
        "decoder_input_tokens": rng.integers(4, 260, (2, 256)).astype(np.int32) * (segments > 0),
        "decoder_target_tokens": rng.integers(4, 260, (2, 256)).astype(np.int32) * (segments > 0),
        "decoder_loss_weights": (segments > 0).astype(np.int32),
        "decoder_segment_ids": segments,
        "decoder_positions": np.concatenate([np.arange(100), np.arange(100), np.zeros(56)])[None].repeat(2, 0),
    }
    losses = {
        impl: float(
            token_losses(Decoder(ModelConfig(**{**base.to_dict(), "attention": impl})), params, batch)["loss_sum"]
        )
        for impl in ("xla", "splash")
    }
    assert losses["xla"] == pytest.approx(losses["splash"], rel=1e-5)


def test_cudnn_attention_says_it_needs_a_gpu():
    q, k, v, segments = packed_inputs()
    if jax.default_backend() == "gpu":
        pytest.skip("runs the kernel instead on a GPU")
    slots = jnp.broadcast_to(jnp.arange(q.shape[1]), segments.shape)
    with pytest.raises(ConfigError, match="needs an NVIDIA GPU"):
        attention.cudnn_attention(q, k, v, attention.attention_mask(slots, segments, slots[0], segments))
