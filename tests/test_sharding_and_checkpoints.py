"""The sharded train step equals the one-device step; Orbax save and restore give the same state."""

import jax
import numpy as np
import pytest

from orca_jax.checkpoints.store import Checkpoints
from orca_jax.errors import CheckpointError, ConfigError
from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig
from orca_jax.training import step as step_lib
from orca_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer

CFG = ModelConfig(vocab_size=260, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128, dtype="float32")
OPT = OptimizerConfig(learning_rate=1e-3, warmup_steps=1, weight_decay=0.01)


def random_batch(rows=8, length=32, seed=0):
    rng = np.random.default_rng(seed)
    segments = np.repeat(np.array([[1] * 20 + [2] * 8 + [0] * 4]), rows, axis=0).astype(np.int32)
    return {
        "decoder_input_tokens": rng.integers(4, 260, (rows, length)).astype(np.int32) * (segments > 0),
        "decoder_target_tokens": rng.integers(4, 260, (rows, length)).astype(np.int32) * (segments > 0),
        "decoder_loss_weights": (rng.random((rows, length)) < 0.5).astype(np.int32) * (segments > 0),
        "decoder_segment_ids": segments,
        "decoder_positions": np.concatenate([np.arange(20), np.arange(8), np.zeros(4)])
        .astype(np.int32)[None]
        .repeat(rows, 0),
    }


def assert_trees_equal(a, b, **tolerance):
    leaves_a, leaves_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if tolerance:
            np.testing.assert_allclose(x, y, **tolerance)
        else:
            np.testing.assert_array_equal(x, y)


def run_steps(mesh, steps=2):
    model = Decoder(CFG)
    tx, schedule = make_optimizer(OPT, 10), learning_rate_schedule(OPT, 10)
    with sharding.use_mesh(mesh):
        shardings = sharding.shardings_of(step_lib.abstract_state(model, tx), mesh)
        state = step_lib.init_state(model, tx, 0, shardings)
        train_step = step_lib.jit_train_step(model, tx, schedule, shardings, mesh)
        losses = []
        for i in range(steps):
            state, metrics = train_step(state, sharding.global_batch(random_batch(seed=i), mesh))
            losses.append(float(metrics["loss"]))
    return state, losses


def test_sharded_step_on_8_devices_equals_one_device(devices):
    one, losses_one = run_steps(sharding.make_mesh(MeshConfig(1, 1, 1), devices[:1]))
    eight, losses_eight = run_steps(sharding.make_mesh(MeshConfig(2, 2, 2), devices))
    # Really sharded: the parameters and their Adam moments are split over fsdp and tensor.
    assert eight.params["layers"]["wq"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert len(eight.params["layers"]["w_up"].addressable_shards[0].data.flatten()) == CFG.num_layers * 64 * 128 // 4
    mu = eight.opt_state[1][0].mu["layers"]["wq"]
    assert mu.sharding.spec == eight.params["layers"]["wq"].sharding.spec
    np.testing.assert_allclose(losses_one, losses_eight, rtol=1e-5)
    assert_trees_equal(one, eight, rtol=1e-4, atol=1e-6)


def test_mesh_config_fills_one_axis_and_rejects_bad_sizes():
    assert MeshConfig(2, -1, 2).shape(8) == (2, 2, 2)
    assert MeshConfig(1, -1, 1).shape(8) == (1, 8, 1)
    with pytest.raises(ConfigError, match="at most one"):
        MeshConfig(-1, -1, 1).shape(8)
    with pytest.raises(ConfigError, match="do not divide"):
        MeshConfig(3, -1, 1).shape(8)
    with pytest.raises(ConfigError, match="needs 4 devices"):
        MeshConfig(2, 2, 1).shape(8)


def test_batch_must_split_over_batch_shards(devices):
    mesh = sharding.make_mesh(MeshConfig(2, 2, 2), devices)
    assert sharding.host_batch_size(8, mesh) == 8
    with pytest.raises(ConfigError, match="does not divide"):
        sharding.host_batch_size(6, mesh)


def test_orbax_save_and_restore_give_identical_state(tmp_path, devices):
    mesh = sharding.make_mesh(MeshConfig(1, 4, 2), devices)
    state, _ = run_steps(mesh, steps=1)
    model, tx = Decoder(CFG), make_optimizer(OPT, 10)
    boxed = step_lib.abstract_state(model, tx)
    ckpt = Checkpoints(str(tmp_path / "ckpt"), keep=1, keep_every=4)
    for step in (3, 4, 5):
        assert ckpt.save(step, state, {"note": "x"})
    ckpt.wait()
    assert ckpt.all_steps() == [4, 5]  # the newest, and the multiple of keep_every

    # Restore onto a different mesh: same values, the new layout.
    other = sharding.make_mesh(MeshConfig(4, 1, 2), devices)
    with sharding.use_mesh(other):
        shardings = sharding.shardings_of(boxed, other)
        restored = ckpt.restore_state(5, sharding.strip_axis_names(boxed), shardings)
    assert int(restored.step) == 5
    assert ckpt.restore_meta(5) == {"note": "x", "step": 5}
    assert restored.params["layers"]["wq"].sharding.mesh.shape == other.shape
    assert_trees_equal(state.params, restored.params)
    assert_trees_equal(state.opt_state, restored.opt_state)
    ckpt.close()


def test_missing_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints folder"):
        Checkpoints(str(tmp_path / "nowhere"), create=False)
    (tmp_path / "empty").mkdir()
    ckpt = Checkpoints(str(tmp_path / "empty"), create=False)
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        ckpt.resolve_step(None)
    # An interrupted save leaves only a temporary folder, which is not a checkpoint.
    (tmp_path / "empty" / "7.orbax-checkpoint-tmp-123").mkdir()
    assert ckpt.all_steps() == []
    ckpt.close()
