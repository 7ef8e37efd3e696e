"""The trainer at pod scale, on CPU: gradient accumulation, non-finite steps, Adafactor, validation,
SIGKILL and SIGTERM with exact resume, and two processes over jax.distributed matching one."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir
from orca_jax.data.config import DataConfig, FileSet
from orca_jax.datagen.mini_orca import write_mini_orca
from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig
from orca_jax.training import step as step_lib
from orca_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
from orca_jax.training.trainer import TrainConfig, TrainingStopped, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = ModelConfig(vocab_size=260, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64, dtype="float32")
TINY = [
    "--gin.ModelConfig.d_model=32", "--gin.ModelConfig.num_layers=1", "--gin.ModelConfig.num_heads=2",
    "--gin.ModelConfig.num_kv_heads=2", "--gin.ModelConfig.mlp_dim=64", "--gin.DataConfig.sequence_length=256",
    "--gin.TrainConfig.batch_size=8", "--gin.TrainConfig.log_every=1", "--gin.OptimizerConfig.warmup_steps=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data") / "mini")
    write_mini_orca(out, num_train=400, num_heldout=16, families=["addition"], seed=0)
    return out


def random_batch(rows=8, length=32, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "decoder_input_tokens": rng.integers(4, 260, (rows, length)).astype(np.int32),
        "decoder_target_tokens": rng.integers(4, 260, (rows, length)).astype(np.int32),
        "decoder_loss_weights": (rng.random((rows, length)) < 0.6).astype(np.int32),
        "decoder_segment_ids": np.ones((rows, length), np.int32),
        "decoder_positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1)),
    }


def steps(mesh, microbatches, opt=OptimizerConfig(learning_rate=1e-3, warmup_steps=1), n=2):
    model, tx, schedule = Decoder(CFG), make_optimizer(opt, 10), learning_rate_schedule(opt, 10)
    with sharding.use_mesh(mesh):
        shardings = sharding.shardings_of(step_lib.abstract_state(model, tx), mesh)
        state = step_lib.init_state(model, tx, 0, shardings)
        fn = step_lib.jit_train_step(model, tx, schedule, shardings, mesh, microbatches)
        losses = []
        for i in range(n):
            state, metrics = fn(state, sharding.global_batch(random_batch(seed=i), mesh))
            losses.append(float(metrics["loss"]))
    return state, losses


def test_gradient_accumulation_equals_one_pass(devices):
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2), devices)
    one, losses_one = steps(mesh, microbatches=1)
    four, losses_four = steps(mesh, microbatches=4)  # 2 rows per microbatch... over 4 batch shards: 1 each
    np.testing.assert_allclose(losses_one, losses_four, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.device_get(one.params)), jax.tree.leaves(jax.device_get(four.params)),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_adafactor_trains(devices):
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=4, tensor=2), devices)
    opt = OptimizerConfig(name="adafactor", learning_rate=1e-2, warmup_steps=1)
    model, tx, schedule = Decoder(CFG), make_optimizer(opt, 10), learning_rate_schedule(opt, 10)
    with sharding.use_mesh(mesh):
        shardings = sharding.shardings_of(step_lib.abstract_state(model, tx), mesh)
        state = step_lib.init_state(model, tx, 0, shardings)
        fn = step_lib.jit_train_step(model, tx, schedule, shardings, mesh)
        batch = sharding.global_batch(random_batch(), mesh)
        state, metrics = fn(state, batch)  # the old state's buffers are donated: never reuse them
        losses = [float(metrics["loss"])]
        for _ in range(5):
            state, metrics = fn(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[1] < losses[0] - 0.1


def test_a_non_finite_step_changes_nothing(devices):
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices[:1])
    model, tx = Decoder(CFG), make_optimizer(OptimizerConfig(), 10)
    with sharding.use_mesh(mesh):
        shardings = sharding.shardings_of(step_lib.abstract_state(model, tx), mesh)
        state = step_lib.init_state(model, tx, 0, shardings)
        state = state.replace(params={**state.params, "final_norm": state.params["final_norm"].at[0].set(jnp.inf)})
        fn = step_lib.jit_train_step(model, tx, learning_rate_schedule(OptimizerConfig(), 10), shardings, mesh)
        before = jax.device_get(state)
        after, metrics = fn(state, sharding.global_batch(random_batch(), mesh))
    assert float(metrics["skipped"]) == 1.0 and int(after.step) == 1
    for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(jax.device_get(after.params)), strict=True):
        np.testing.assert_array_equal(a, b)


def data_config(data_dir, holdout=True):
    source = FileSet("scale_test", train=f"{data_dir}/train_strong.jsonl",
                     validation=f"{data_dir}/heldout.jsonl" if holdout else "")  # fmt: skip
    return DataConfig(sources=(source,), sequence_length=256)


def test_training_stops_after_consecutive_non_finite_steps(data_dir, tmp_path):
    explode = OptimizerConfig(learning_rate=1e30, warmup_steps=0, grad_clip_norm=0.0)
    config = TrainConfig(num_steps=20, batch_size=8, log_every=1, checkpoint_every=2, max_nonfinite=3)
    with pytest.raises(TrainingStopped, match="not finite for 3 steps in a row"):
        train(str(tmp_path / "run"), CFG, data_config(data_dir), explode, MeshConfig(), config)
    assert Checkpoints(checkpoints_dir(str(tmp_path / "run")), create=False).all_steps()  # kept


def test_validation_loss_every_n_steps(data_dir, tmp_path):
    config = TrainConfig(num_steps=4, batch_size=8, log_every=2, checkpoint_every=4, eval_every=2)
    train(str(tmp_path / "run"), CFG, data_config(data_dir), OptimizerConfig(), MeshConfig(), config)
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    validations = [(m["step"], m["validation/loss"]) for m in lines if "validation/loss" in m]
    assert [s for s, _ in validations] == [2, 4] and all(0 < v < 10 for _, v in validations)


def test_a_stage_can_start_from_another_runs_full_state(data_dir, tmp_path):
    first, second = str(tmp_path / "stage1"), str(tmp_path / "stage2")
    config = TrainConfig(num_steps=2, batch_size=8, log_every=1, checkpoint_every=2)
    train(first, CFG, data_config(data_dir), OptimizerConfig(), MeshConfig(), config)
    train(second, CFG, data_config(data_dir), OptimizerConfig(), MeshConfig(), config, init_from=first,
          init_optimizer=True)  # fmt: skip
    meta = Checkpoints(checkpoints_dir(second), create=False).restore_meta(2)
    assert meta["source"] == {"init_from": os.path.abspath(first), "step": 2, "optimizer": True}


# Subprocess runs: the binary as users run it.


def run_args(model_dir, data_dir, steps, *extra):
    gin = ["--gin_file=configs/runs/mini_orca.gin", f"--gin.MODEL_DIR={model_dir}", f"--gin.DATA_DIR={data_dir}"]
    return [sys.executable, "-m", "orca_jax.cli.train", *gin, f"--gin.NUM_STEPS={steps}", *TINY, *extra]


def environment(devices=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run(args, devices=None):
    result = subprocess.run(args, cwd=REPO, env=environment(devices), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(model_dir):
    return [(m["step"], m["loss"]) for m in map(json.loads, open(os.path.join(model_dir, "metrics.jsonl")))
            if "loss" in m]  # fmt: skip


def final_params(model_dir, step):
    checkpoints = Checkpoints(checkpoints_dir(model_dir), create=False)
    model = Decoder(ModelConfig.from_dict(checkpoints.restore_meta(step)["model"]))
    from orca_jax.model.llama import abstract_params

    like = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), sharding.strip_axis_names(abstract_params(model)))
    return checkpoints.restore_params(step, like)


def start_and_stop(args, model_dir, after_lines, sig):
    """Starts a run and sends `sig` once metrics.jsonl has `after_lines` lines."""
    process = subprocess.Popen(args, cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    path = os.path.join(model_dir, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline:
        if os.path.exists(path) and sum(1 for _ in open(path)) >= after_lines:
            break
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("straight") / "run")
    run(run_args(model_dir, data_dir, 24, "--gin.TrainConfig.checkpoint_every=4"))
    return model_dir


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_exact(straight_run, data_dir, tmp_path):
    model_dir = str(tmp_path / "killed")
    args = run_args(model_dir, data_dir, 24, "--gin.TrainConfig.checkpoint_every=4")
    code, _, _ = start_and_stop(args, model_dir, random.Random().randint(5, 18), signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert "resuming from" in run(args).stdout
    assert losses(model_dir) == losses(straight_run)  # step by step, at full precision
    a, b = final_params(model_dir, 24), final_params(straight_run, 24)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)  # bit-identical


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_exits_cleanly(straight_run, data_dir, tmp_path):
    model_dir = str(tmp_path / "preempted")
    args = run_args(model_dir, data_dir, 24, "--gin.TrainConfig.checkpoint_every=100")
    started = time.time()
    code, out, err = start_and_stop(args, model_dir, 6, signal.SIGTERM)
    assert code == 0, err[-2000:]
    assert time.time() - started < 120
    saved = int(out.split("SIGTERM: saved step ")[1].split()[0])
    assert Checkpoints(checkpoints_dir(model_dir), create=False).all_steps() == [saved] and 6 <= saved < 24
    run(args)
    assert losses(model_dir) == losses(straight_run)


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one(data_dir, tmp_path):
    one = str(tmp_path / "one")
    mesh = ["--gin.MeshConfig.data=2", "--gin.MeshConfig.fsdp=-1", "--gin.TrainConfig.data_shards=2"]
    run(run_args(one, data_dir, 4, "--gin.TrainConfig.checkpoint_every=4", *mesh), devices=8)
    two = str(tmp_path / "two")
    for p in two_processes(run_args(two, data_dir, 4, "--gin.TrainConfig.checkpoint_every=4", *mesh)):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    got, want = losses(two), losses(one)
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-5)

    # orca-eval on the two-process checkpoint, in two processes and in one: the same generations and metrics.
    def eval_args(output_dir):
        return [sys.executable, "-m", "orca_jax.cli.eval", "--gin_file=configs/runs/eval_mini.gin",
                f"--gin.CHECKPOINT_DIR={two}", f"--gin.DATA_DIR={data_dir}", f"--gin.evaluate.output_dir={output_dir}",
                "--gin.Generation.max_new_tokens=8", "--gin.Generation.batch_size=8"]  # fmt: skip

    run(eval_args(str(tmp_path / "eval_one")), devices=8)
    for p in two_processes(eval_args(str(tmp_path / "eval_two"))):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    metrics = [json.load(open(tmp_path / d / "metrics_step_4.json")) for d in ("eval_one", "eval_two")]
    assert metrics[0].keys() == metrics[1].keys() and "mini_orca/average" in metrics[0]
    for key in metrics[0]:
        if not key.endswith("seconds"):
            np.testing.assert_allclose(metrics[1][key], metrics[0][key], rtol=1e-5, err_msg=key)
    generations = [[json.loads(line)["generation"] for line in open(tmp_path / d / "inferences_step_4.jsonl")]
                   for d in ("eval_one", "eval_two")]  # fmt: skip
    assert generations[0] == generations[1] and len(generations[0]) == 32  # 16 questions, 16 harder ones


def two_processes(args):
    """`args` as processes 0 and 1 of one jax.distributed cluster, 4 CPU devices each."""
    cluster = [f"--coordinator_address=localhost:{free_port()}", "--num_processes=2"]
    return [
        subprocess.Popen([*args, *cluster, f"--process_id={i}"], cwd=REPO, env=environment(devices=4),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
