"""The decoder: packing never leaks across examples, the KV cache changes nothing, padding is never predicted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orca_jax.errors import ConfigError
from orca_jax.model import decode
from orca_jax.model.config import ModelConfig
from orca_jax.model.decode import decode_weights, forward_with_cache, generate, init_cache, left_pad, next_token
from orca_jax.model.llama import Decoder, abstract_params
from orca_jax.model.loss import token_losses
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import strip_axis_names

CFG = ModelConfig(vocab_size=260, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128, dtype="float32")


@pytest.fixture(scope="module")
def model_and_params():
    model = Decoder(CFG)
    tokens = jnp.ones((1, 8), jnp.int32)
    params = strip_axis_names(jax.jit(model.init)(jax.random.key(0), tokens, tokens, tokens)["params"])
    return model, params


@pytest.fixture(scope="module")
def losses(model_and_params):
    model, params = model_and_params
    return jax.jit(lambda batch: token_losses(model, params, batch))


def example_batch(tokens, loss_from):
    """One unpacked row: inputs = BOS + tokens[:-1], targets = tokens, loss on tokens[loss_from:]."""
    n = len(tokens)
    return {
        "decoder_input_tokens": np.array([[1, *tokens[:-1]]], np.int32),
        "decoder_target_tokens": np.array([tokens], np.int32),
        "decoder_loss_weights": np.array([[0] * loss_from + [1] * (n - loss_from)], np.int32),
        "decoder_segment_ids": np.ones((1, n), np.int32),
        "decoder_positions": np.arange(n, dtype=np.int32)[None],
    }


def test_packed_row_loss_equals_its_examples_alone(losses):
    rng = np.random.default_rng(0)
    a, b = rng.integers(4, 260, 11).tolist(), rng.integers(4, 260, 7).tolist()
    alone = [losses(example_batch(x, 3)) for x in (a, b)]
    ea, eb = example_batch(a, 3), example_batch(b, 3)
    packed = {k: np.concatenate([ea[k], eb[k], np.zeros((1, 4), np.int32)], axis=1) for k in ea}
    packed["decoder_segment_ids"] = np.array([[1] * 11 + [2] * 7 + [0] * 4], np.int32)
    got = losses(packed)
    np.testing.assert_allclose(got["loss_sum"], alone[0]["loss_sum"] + alone[1]["loss_sum"], rtol=1e-6)
    assert float(got["weight_sum"]) == 8 + 4


def test_attention_crossing_segments_would_change_the_loss(losses):
    """The same packed row with one segment id everywhere gives a different loss: the mask matters."""
    rng = np.random.default_rng(1)
    a, b = rng.integers(4, 260, 9).tolist(), rng.integers(4, 260, 9).tolist()
    ea, eb = example_batch(a, 2), example_batch(b, 2)
    packed = {k: np.concatenate([ea[k], eb[k]], axis=1) for k in ea}
    packed["decoder_segment_ids"] = np.array([[1] * 9 + [2] * 9], np.int32)
    merged = dict(packed, decoder_segment_ids=np.ones((1, 18), np.int32))
    assert abs(float(losses(packed)["loss_sum"]) - float(losses(merged)["loss_sum"])) > 1e-3


def test_kv_cache_matches_full_forward(model_and_params):
    model, params = model_and_params
    tokens = np.random.default_rng(2).integers(4, 260, (2, 12)).astype(np.int32)
    pos = np.tile(np.arange(12, dtype=np.int32), (2, 1))
    full = model.apply({"params": params}, tokens, pos, np.ones_like(tokens))
    weights = decode_weights(CFG, params)
    extend = jax.jit(lambda x, p, cache, i: forward_with_cache(CFG, weights, x, p, jnp.ones_like(x), cache, i))
    logits, cache = extend(tokens[:, :7], pos[:, :7], init_cache(CFG, 2, 16), 0)
    pieces = [logits]
    for i in range(7, 12):
        step, cache = extend(tokens[:, i : i + 1], pos[:, i : i + 1], cache, i)
        pieces.append(step)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)
    # A literal index 0 is the prefill path (the prompt attends to itself, not to the empty cache);
    # with last_only, the last layer runs attention and MLP for the last position alone; the
    # rotations' angles come from the table.
    prefill = jax.jit(
        lambda x, p, cache: forward_with_cache(
            CFG, weights, x, p, jnp.ones_like(x), cache, 0, last_only=True, rope_lookup=decode.rope_table(CFG, 16)
        )
    )
    last, prefilled = prefill(tokens[:, :7], pos[:, :7], init_cache(CFG, 2, 16))
    np.testing.assert_allclose(last, full[:, 6:7], atol=1e-5)
    _, traced = extend(tokens[:, :7], pos[:, :7], init_cache(CFG, 2, 16), 0)
    for got, want in zip(jax.tree.leaves(prefilled), jax.tree.leaves(traced), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_padded_vocabulary_is_never_predicted(model_and_params):
    model, params = model_and_params
    assert CFG.padded_vocab_size == 384
    tokens = np.random.default_rng(3).integers(4, 260, (2, 10)).astype(np.int32)
    logits = model.apply({"params": params}, tokens, np.tile(np.arange(10), (2, 1)), np.ones_like(tokens))
    assert logits.shape == (2, 10, 384)
    assert float(jax.nn.softmax(logits)[..., 260:].max()) == 0.0


def greedy_without_cache(model, params, prompt, steps, eos_id):
    """Re-runs the whole sequence for every new token (one fixed shape: the tail is padding)."""
    forward = jax.jit(lambda x, seg: model.apply({"params": params}, x, np.arange(x.shape[1])[None], seg))
    length = len(prompt) + steps
    tokens = list(prompt)
    for _ in range(steps):
        x = np.array([tokens + [0] * (length - len(tokens))], np.int32)
        logits = forward(x, (x != 0).astype(np.int32))
        tokens.append(int(jnp.argmax(logits[0, len(tokens) - 1])))
        if tokens[-1] == eos_id:
            break
    return tokens[len(prompt) :]


def test_greedy_generation_with_cache_equals_generation_without(model_and_params, devices):
    model, params = model_and_params
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=1, tensor=1), devices[:1])
    rng = np.random.default_rng(4)
    prompts = [[1, *rng.integers(4, 260, n).tolist()] for n in (3, 9, 5)]
    eos = 7  # a token the random model emits now and then, so some rows stop early
    with sharding.use_mesh(mesh):
        weights = decode.prepare(model, params)
        got = generate(model, weights, prompts, max_new_tokens=12, eos_id=eos, mesh=mesh, pad_to=8)
    for prompt, out in zip(prompts, got, strict=True):
        assert out == greedy_without_cache(model, params, prompt, 12, eos)
    with pytest.raises(TypeError, match="decode.prepare"):  # the raw parameters, not decode weights
        generate(model, params, prompts, max_new_tokens=12, eos_id=eos, mesh=mesh)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, weights, prompts, max_new_tokens=0, eos_id=eos, mesh=mesh)


def test_greedy_is_argmax_with_the_first_of_tied_maxima():
    rng = np.random.default_rng(5)
    for vocab in (384, 260):  # rows of 128, and the plain argmax where 128 does not divide
        logits = rng.standard_normal((6, vocab)).astype(np.float32)
        logits[0, [300 % vocab, 5]] = 9.0  # tied maxima in different 128-wide rows: the first wins
        logits[1, [130, 129]] = 9.0  # tied in one row
        logits[2, -1] = 9.0  # the very last id
        assert decode.greedy(jnp.asarray(logits)).tolist() == np.argmax(logits, axis=-1).tolist()


def test_left_pad():
    assert left_pad([[5, 6], [7]], 4).tolist() == [[0, 0, 5, 6], [0, 0, 0, 7]]
    with pytest.raises(ValueError):
        left_pad([[1, 2, 3]], 2)


def test_config_checks_and_parameter_count(model_and_params):
    _, params = model_and_params
    assert CFG.num_params() == sum(x.size for x in jax.tree.leaves(params))
    with pytest.raises(ConfigError, match="remat"):
        ModelConfig(remat="sometimes")
    with pytest.raises(ConfigError, match="num_kv_heads"):
        ModelConfig(num_heads=6, num_kv_heads=4)


def test_next_token_greedy_nucleus_and_temperature():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.key(0), 2000)
    assert int(next_token(logits, keys[0], 0.0, 1.0)[0]) == 0
    draws = lambda t, p: np.array([int(next_token(logits, k, t, p)[0]) for k in keys[:400]])  # noqa: E731
    assert set(draws(1.0, 0.4)) == {0}  # the top token alone reaches 0.4
    assert set(draws(1.0, 0.7)) == {0, 1}  # 0.5 + 0.3 reaches 0.7; 0.15 and 0.05 are cut
    sample = jax.vmap(lambda k: next_token(logits, k, 1.0, 1.0)[0])(keys)
    freq = np.bincount(np.asarray(sample), minlength=4) / len(keys)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.04)


def test_sampled_generation_depends_only_on_the_seed(model_and_params, devices):
    model, params = model_and_params
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=1, tensor=1), devices[:1])
    prompts = [[1, 40, 41, 42], [1, 50]]
    with sharding.use_mesh(mesh):
        weights = decode.prepare(model, params)
        run = lambda seed: generate(model, weights, prompts, max_new_tokens=10, eos_id=2, mesh=mesh,  # noqa: E731
                                    temperature=1.0, top_p=0.9, seed=seed, pad_to=8)  # fmt: skip
        first, again, other = run(0), run(0), run(1)
    assert first == again and first != other


def test_generation_sharded_on_8_devices_equals_one_device(model_and_params, devices):
    model, params = model_and_params
    prompts = [[1, *range(10 + i, 14 + 2 * i)] for i in range(6)]  # 6 rows: padded to 8 for the mesh
    results = []
    for mesh_config, devs in ((sharding.MeshConfig(1, 1, 1), devices[:1]), (sharding.MeshConfig(2, 2, 2), devices)):
        mesh = sharding.make_mesh(mesh_config, devs)
        with sharding.use_mesh(mesh):
            placed = jax.device_put(params, sharding.shardings_of(abstract_params(model), mesh))
            weights = decode.prepare(model, placed)
            results.append(generate(model, weights, prompts, max_new_tokens=8, eos_id=7, mesh=mesh, pad_to=8))
    assert results[0] == results[1]


def test_unrolled_layers_compute_the_same_loss_and_gradients(model_and_params):
    """`scan_unroll` changes how the layer loop is compiled, not the function or the parameters."""
    import dataclasses

    _, params = model_and_params
    rng = np.random.default_rng(2)
    batch = example_batch(rng.integers(4, 260, 16).tolist(), 4)

    def loss_and_grads(cfg):
        return jax.jit(jax.value_and_grad(lambda p: token_losses(Decoder(cfg), p, batch)["loss_sum"]))(params)

    (loop, loop_grads), (unrolled, unrolled_grads) = (
        loss_and_grads(dataclasses.replace(CFG, scan_unroll=n)) for n in (1, CFG.num_layers))  # fmt: skip
    np.testing.assert_allclose(unrolled, loop, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(unrolled_grads), jax.tree.leaves(loop_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="scan_unroll"):
        ModelConfig(scan_unroll=0)


@pytest.mark.parametrize("in_dims", [1, 2])
def test_dense_computes_the_same_in_the_cpu_and_the_accelerator_layouts(monkeypatch, in_dims):
    """On CPU `dense` flattens the tokens into one 2-D matmul; for TPU and GPU it contracts over
    [B, T, ...] (the layout each compiler handles best). Both are the same product."""
    from orca_jax.model import llama

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 3, 4)[: 2 + in_dims]), jnp.float32)  # [B, T, *in]
    w = jnp.asarray(rng.standard_normal((*x.shape[2:], 6, 7)), jnp.float32)  # [*in, *out]
    cpu = llama.dense(x, w, in_dims)
    monkeypatch.setattr(llama.sharding, "target_platform", lambda: "tpu")
    accelerator = llama.dense(x, w, in_dims)
    assert cpu.shape == accelerator.shape == (*x.shape[:2], *w.shape[in_dims:])
    np.testing.assert_allclose(cpu, accelerator, rtol=1e-5, atol=1e-5)


def test_the_target_platform_is_the_meshs_not_the_hosts():
    from orca_jax.parallel import sharding, topology

    assert sharding.target_platform() == "cpu"
    pytest.importorskip("libtpu")
    devices = topology.parse_slice("v5litepod-8").devices()
    with sharding.use_mesh(sharding.make_mesh(sharding.MeshConfig(1, -1, 1), devices)):
        assert sharding.target_platform() == "tpu"


def test_token_accuracy_counts_the_weighted_tokens_whose_argmax_is_the_target():
    cfg = ModelConfig(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_dim=64, dtype="float32")
    model = Decoder(cfg)
    params = jax.jit(lambda: model.init(jax.random.key(0), *(jnp.ones((1, 8), jnp.int32),) * 3))()["params"]
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, 64, (4, 8)), jnp.int32)
    logits = model.apply({"params": params}, tokens, jnp.tile(jnp.arange(8), (4, 1)), jnp.ones((4, 8), jnp.int32))
    predicted = np.argmax(np.asarray(logits), axis=-1)
    targets = np.where(rng.random((4, 8)) < 0.5, predicted, rng.integers(1, 64, (4, 8)))  # about half right
    weights = rng.integers(0, 2, (4, 8))
    batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": jnp.asarray(targets, jnp.int32),
             "decoder_positions": jnp.tile(jnp.arange(8), (4, 1)), "decoder_segment_ids": jnp.ones((4, 8), jnp.int32),
             "decoder_loss_weights": jnp.asarray(weights, jnp.int32)}  # fmt: skip
    sums = token_losses(model, params, batch)
    assert float(sums["correct_sum"]) == float(((predicted == targets) * weights).sum()) > 0
