"""benchmarks/accelerator_check.py on CPU: the --quick run's JSON, the time guard, the usage error, and
the attention comparison it runs on a GPU (here with JAX's own XLA attention standing in for cuDNN)."""

import importlib.util
import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import pytest

from orca_jax.model import attention

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "accelerator_check.py"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("accelerator_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def records(out: str) -> dict[str, dict]:
    parsed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert all(r["check"] == "accelerator_check" for r in parsed)
    return {r["part"]: r for r in parsed}


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_run_on_cpu(check, capsys):
    assert check.main(["--quick"]) == 0
    parts = records(capsys.readouterr().out)
    assert list(parts) == ["attention_parity", "train_step", "decode", "summary"]
    assert parts["attention_parity"]["status"] == "skipped: needs an NVIDIA GPU"

    train = parts["train_step"]
    assert train["status"] == "ok" and train["nominal_peak_flops"] is None  # a CPU has no data-sheet peak
    assert positive(train["measured_peak_flops"])
    rows = {r["implementation"]: r for r in train["rows"]}
    assert list(rows) == ["transformers + torch (bf16 autocast)", "orca_jax (xla attention)"]
    for row in rows.values():
        assert row["status"] == "ok"
        assert positive(row["tokens_per_sec"]) and positive(row["mfu_vs_measured_peak"])
        assert len(row["step_seconds"]) == check.QUICK.train_steps
        # Random tokens: both start near the uniform loss, ln(vocab).
        assert abs(row["loss_first"] - math.log(check.QUICK.train_model.vocab_size)) < 1.0
    assert rows["transformers + torch (bf16 autocast)"]["same_param_count"]

    decode = parts["decode"]
    assert decode["status"] == "pass"
    assert [r["batch_size"] for r in decode["rows"]] == [1, 16]
    for row in decode["rows"]:
        assert row["same_tokens"]
        for name in ("orca_jax_kv_cache", "transformers_generate"):
            assert positive(row[f"{name}_tokens_per_sec"]) and len(row[f"{name}_seconds_per_round"]) == 1

    summary = parts["summary"]
    assert summary["ok"] and summary["backend"] == "cpu" and summary["quick"]
    assert summary["statuses"] == {name: parts[name]["status"] for name in ("attention_parity", "train_step", "decode")}


def test_time_guard_skips_parts_with_a_note(check, capsys):
    assert check.main(["--quick", "--budget_seconds", "0"]) == 0
    parts = records(capsys.readouterr().out)
    for name in ("attention_parity", "train_step", "decode"):
        assert parts[name]["status"].startswith("skipped: time budget"), parts[name]
    assert parts["summary"]["ok"]  # skipped is not failed


def test_full_size_on_cpu_is_a_usage_error(check, capsys):
    if jax.default_backend() == "gpu":
        pytest.skip("the full check runs on a GPU")
    with pytest.raises(SystemExit) as e:
        check.main([])
    assert e.value.code == 2
    assert "jax sees no GPU" in capsys.readouterr().err


def test_packed_rows_have_several_segments_and_padding(check):
    segments, positions = check.packed_segments(4, 256)
    for seg, pos in zip(segments, positions, strict=True):
        assert 3 <= seg.max() <= 6 and (seg == 0).sum() >= 256 // 20
        assert (pos[seg > 0] == 0).sum() == seg.max()  # positions restart once per example


def test_kernel_comparison_passes_an_equivalent_kernel_and_fails_a_leaky_one(check):
    def jax_xla(q, k, v, mask):  # what cudnn_attention calls, with JAX's XLA implementation
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="xla")

    good = check.kernel_parity(jax_xla, check.QUICK)
    assert good["output"]["pass"] and all(g["pass"] for g in good["grads"].values()), good
    assert good["output"]["max_abs_diff"] <= good["output"]["tolerance"]

    def leaky(q, k, v, mask):  # causal only: attends across the packed examples' boundaries
        t = q.shape[1]
        return attention.xla_attention(q, k, v, jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), mask.shape))

    bad = check.kernel_parity(leaky, check.QUICK)
    assert not bad["output"]["pass"] and not all(g["pass"] for g in bad["grads"].values())

    def nan_padding(q, k, v, mask):  # right on the real tokens, NaN on the padding rows
        out = attention.xla_attention(q, k, v, mask)
        return jnp.where(mask.any(axis=-1)[..., None, None], out, jnp.nan)

    nan = check.kernel_parity(nan_padding, check.QUICK)["output"]
    assert not nan["finite"] and not nan["pass"] and nan["max_abs_diff"] == 0.0
