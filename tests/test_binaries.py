"""The three commands end to end on a tiny setting, and clear errors (no traceback, exit 2) for bad input."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--gin.ModelConfig.d_model=32",
    "--gin.ModelConfig.num_layers=1",
    "--gin.ModelConfig.num_heads=2",
    "--gin.ModelConfig.num_kv_heads=2",
    "--gin.ModelConfig.mlp_dim=64",
    "--gin.DataConfig.sequence_length=256",
    "--gin.TrainConfig.batch_size=4",
    "--gin.TrainConfig.log_every=2",
    "--gin.TrainConfig.checkpoint_every=2",
]


def run(module, *args, cwd=REPO):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, "-m", f"orca_jax.cli.{module}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def call(capsys):
    """A binary's main() in this process, as its console script calls it: the error paths need no new
    interpreter (the end-to-end tests run the real processes)."""

    def call_main(module, *args):
        main = importlib.import_module(f"orca_jax.cli.{module}").main
        code = 0
        try:
            main([a.replace("configs/", f"{REPO}/configs/", 1) if a.startswith("--gin_file=configs/") else a
                  for a in args])  # fmt: skip
        except SystemExit as stopped:
            code = stopped.code
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return call_main


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "mini"
    result = run("data", "generate-mini", "--out", str(out), "--num_train", "64", "--num_heldout", "8")
    assert result.returncode == 0, result.stderr
    return str(out)


@pytest.mark.slow
def test_generate_train_eval_end_to_end(data_dir, tmp_path, call):
    model_dir = str(tmp_path / "model")
    train_args = [
        "--gin_file=configs/runs/mini_orca.gin",
        f"--gin.MODEL_DIR={model_dir}",
        f"--gin.DATA_DIR={data_dir}",
        "--gin.NUM_STEPS=4",
        *TINY,
    ]
    result = run("train", *train_args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 4/4" in result.stdout and "tok/s" in result.stdout and "ETA" in result.stdout

    config = open(os.path.join(model_dir, "config.gin")).read()
    assert "ModelConfig.d_model = 32" in config and model_dir in config
    metrics = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    assert [m["step"] for m in metrics] == [2, 4] and all(m["loss"] > 0 for m in metrics)
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints")), key=int) == ["2", "4"]
    assert os.listdir(os.path.join(model_dir, "tensorboard", "train"))

    # A second run finds the final checkpoint and has nothing left to do.
    again = call("train", *train_args)
    assert again.returncode == 0 and "nothing to train" in again.stdout, again.stderr[-2000:]

    result = run(
        "eval",
        "--gin_file=configs/runs/eval_mini.gin",
        f"--gin.CHECKPOINT_DIR={model_dir}",
        f"--gin.DATA_DIR={data_dir}",
        "--gin.Generation.max_new_tokens=8",
        "--gin.Generation.batch_size=8",
        "--gin.evaluate.steps='all'",  # the run is marked finished: evaluates 2 and 4, then stops
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generating" in result.stderr and "ETA" in result.stderr  # the progress line
    assert os.path.exists(os.path.join(model_dir, "eval", "metrics_step_2.json"))
    written = json.load(open(os.path.join(model_dir, "eval", "metrics_step_4.json")))
    assert written["step"] == 4 and written["heldout/loss"] > 0 and written["mini_orca/average_parsed"] >= 0
    assert 0 <= written["mini_orca/average"] <= 1 and 0 <= written["mini_orca_hard/average"] <= 1
    rows = [json.loads(line) for line in open(os.path.join(model_dir, "eval", "inferences_step_4.jsonl"))]
    assert rows and {"task", "input", "target", "generation", "answer", "correct"} <= set(rows[0])


def test_missing_data_file(tmp_path, call):
    result = call(
        "train",
        "--gin_file=configs/runs/mini_orca.gin",
        f"--gin.MODEL_DIR={tmp_path / 'm'}",
        f"--gin.DATA_DIR={tmp_path / 'nothing_here'}",
        *TINY,
    )
    # The first file a mini-Orca run reads is the data set's tokenizer.
    assert_clean_error(result, "nothing_here/tokenizer.model", "no such SentencePiece model file", "generate-mini")


def test_malformed_jsonl_line(data_dir, tmp_path, call):
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = open(os.path.join(data_dir, "train_strong.jsonl")).read().splitlines()
    lines[2] = lines[2][:-5]  # cut the closing of the third record
    (bad / "train_strong.jsonl").write_text("\n".join(lines) + "\n")
    (bad / "heldout.jsonl").write_text(open(os.path.join(data_dir, "heldout.jsonl")).read())
    shutil.copy(os.path.join(data_dir, "tokenizer.model"), bad / "tokenizer.model")
    result = call(
        "train",
        "--gin_file=configs/runs/mini_orca.gin",
        f"--gin.MODEL_DIR={tmp_path / 'm'}",
        f"--gin.DATA_DIR={bad}",
        *TINY,
        "--gin.TrainConfig.batch_size=8",  # this process has 8 devices
    )
    assert_clean_error(result, "train_strong.jsonl:3:", "not valid JSON")
    result = call("data", "validate", str(bad / "train_strong.jsonl"))
    assert_clean_error(result, "train_strong.jsonl:3:")


@pytest.mark.parametrize(
    "binding, fragments",
    [
        ("--gin.MODLE_DIR=/tmp/x", ["--gin.MODLE_DIR", "no macro MODLE_DIR", "MODEL_DIR"]),
        ("--gin.TrainConfig.num_stepz=3", ["--gin.TrainConfig.num_stepz=3"]),
        ("--gin.NoSuchThing.x=1", ["NoSuchThing"]),
    ],
)
def test_unknown_gin_binding(binding, fragments, tmp_path, call):
    result = call("train", "--gin_file=configs/runs/mini_orca.gin", f"--gin.MODEL_DIR={tmp_path / 'm'}", binding)
    assert_clean_error(result, *fragments)
    assert not os.path.exists(tmp_path / "m")  # nothing written before the config is known to be good


def test_required_macro_bad_flag_and_missing_gin_file(tmp_path, call):
    assert_clean_error(call("train", "--gin_file=configs/runs/mini_orca.gin"), "MODEL_DIR", "--gin.MODEL_DIR=")
    assert_clean_error(call("train", "--gin_file=configs/runs/mini_orca.gin", "--stepz=3"), "unknown flag '--stepz=3'")
    assert_clean_error(call("train", "--gin_file=configs/runs/nope.gin"), "nope.gin: no such gin file")


def test_eval_without_checkpoints(tmp_path, call):
    result = call("eval", "--gin_file=configs/runs/eval_mini.gin", f"--gin.CHECKPOINT_DIR={tmp_path / 'empty'}")
    assert_clean_error(result, "empty", "no checkpoints folder")


def test_generate_mini_refuses_a_non_empty_folder(tmp_path, call):
    (tmp_path / "keep.txt").write_text("mine")
    assert_clean_error(call("data", "generate-mini", "--out", str(tmp_path)), "not empty", "--overwrite")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def write_tiny_hf_llama(folder, dtype):
    """A 1-layer LLaMA folder as transformers saves one (config.json + model.safetensors), in `dtype`."""
    import numpy as np
    from safetensors.numpy import save_file

    from orca_jax.checkpoints import hf
    from orca_jax.model.config import ModelConfig

    cfg = ModelConfig(vocab_size=64, d_model=16, num_layers=1, num_heads=2, mlp_dim=32, tie_embeddings=True)
    layer = {"self_attn.q_proj": (16, 16), "self_attn.k_proj": (16, 16), "self_attn.v_proj": (16, 16),
             "self_attn.o_proj": (16, 16), "mlp.gate_proj": (32, 16), "mlp.up_proj": (32, 16),
             "mlp.down_proj": (16, 32), "input_layernorm": (16,), "post_attention_layernorm": (16,)}  # fmt: skip
    shapes = {f"model.layers.0.{name}.weight": shape for name, shape in layer.items()}
    shapes |= {"model.embed_tokens.weight": (64, 16), "model.norm.weight": (16,)}
    rng = np.random.default_rng(0)
    save_file({n: rng.normal(size=s).astype(dtype) for n, s in shapes.items()}, str(folder / "model.safetensors"))
    config = hf.config_to_hf(cfg, bos_id=1, eos_id=2, torch_dtype=np.dtype(dtype).name)
    (folder / "config.json").write_text(json.dumps(config))


def test_import_then_export_keeps_the_source_dtype_and_bytes(tmp_path, call):
    import ml_dtypes

    from orca_jax.checkpoints import hf

    (hf_dir := tmp_path / "hf").mkdir()
    write_tiny_hf_llama(hf_dir, ml_dtypes.bfloat16)
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
    imported = call("import_hf", "--hf_dir", str(hf_dir), "--out", ckpt)
    assert imported.returncode == 0 and "parameters (bfloat16)" in imported.stdout, imported.stderr[-2000:]
    exported = call("export", "--checkpoint_dir", ckpt, "--format", "hf", "--out", out)
    assert exported.returncode == 0 and "as hf (bfloat16)" in exported.stdout, exported.stderr[-2000:]
    source, written = hf.SafetensorsFolder(str(hf_dir)), hf.SafetensorsFolder(out)
    assert written.names() == source.names()
    for name in source.names():
        a, b = source.get(name), written.get(name)
        assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), name
    assert_clean_error(call("export", "--checkpoint_dir", ckpt, "--format", "hf", "--out", out), "not empty")
