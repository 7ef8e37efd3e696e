"""orca-compile: the real train step compiled ahead of time for real TPU topologies, through libtpu,
on this CPU-only host (libtpu needs no TPU)."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orca_jax.cli import compile as orca_compile
from orca_jax.errors import ConfigError, UserError
from orca_jax.parallel import topology, xla_cost

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="pip install -e '.[tpu]'")

# Orca's stage-1 run file, shrunk to a small model: every macro it leaves required (MODEL_DIR,
# BASE_CKPT, OPENORCA_DIR, TOKENIZER, NUM_STEPS) stays unset, as a compile needs none of them.
STAGE1_SMALL = [
    "--gin_file=configs/runs/orca_stage1.gin",
    "--gin.ModelConfig.vocab_size=512", "--gin.ModelConfig.d_model=128", "--gin.ModelConfig.num_layers=2",
    "--gin.ModelConfig.num_heads=4", "--gin.ModelConfig.num_kv_heads=4", "--gin.ModelConfig.mlp_dim=256",
    "--gin.ModelConfig.attention='xla'", "--gin.DataConfig.sequence_length=128", "--gin.TrainConfig.batch_size=32",
]  # fmt: skip


def compile_json(capsys, *args: str) -> dict:
    orca_compile.main([*STAGE1_SMALL, "--json", *args])
    return json.loads(capsys.readouterr().out)


def check_sane(report: dict, chips: int, kind: str) -> None:
    memory = report["memory_per_chip"]
    assert report["fits"] and report["chips"] == chips and report["device_kind"] == kind
    assert int(np.prod(list(report["mesh"].values()))) == chips
    assert 0 < memory["arguments"] and 0 < memory["total"] <= memory["hbm"]
    assert memory["aliased"] > 0  # the donated state is reused for the new one
    assert report["model_flops_per_step"] > 0 and report["xla_cost_analysis"]["flops"] > 0
    assert report["estimated_step_seconds"] > 0 and 0 < report["estimated_mfu"] < 1
    assert report["estimated_tokens_per_second"] > 0 and "uncounted_loops" not in report
    assert report["num_steps"].startswith("NUM_STEPS unset")


def test_slice_names_as_users_type_them():
    cases = {"v4-32": ("v4:2x2x4", 16, False), "v4-128": ("v4:4x4x4", 64, True), "v5p-64": ("v5:2x4x4", 32, False),
             "v5p-1536": ("v5:8x8x12", 768, True), "v5litepod-64": ("v5e:8x8", 64, False),
             "v5e-256": ("v5e:16x16", 256, True), "v6e-16": ("v6e:4x4", 16, False)}  # fmt: skip
    for name, (grid, chips, wraps) in cases.items():
        s = topology.parse_slice(name)
        assert (s.topology_name, s.chips, s.wrap[0]) == (grid, chips, wraps), name
    assert topology.parse_slice("v5litepod-128").wrap == (False, True, False)
    for bad in ("v5-64", "v4-48", "v5e-12", "v4-9000", "tpu"):
        with pytest.raises(ConfigError, match="valid forms are v4-N or v5p-N"):
            topology.parse_slice(bad)


def test_unknown_topology_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as e:
        orca_compile.main([*STAGE1_SMALL, "--topology=v9-8"])
    assert e.value.code == 2
    assert "unknown TPU slice 'v9-8': valid forms are" in capsys.readouterr().err


def test_missing_libtpu_says_how_to_install(monkeypatch):
    monkeypatch.setattr(topology.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[tpu\]'"):
        topology.parse_slice("v5e-16").devices()


@needs_libtpu
def test_stage1_file_compiles_for_v5e_and_v4(capsys):
    v5e = compile_json(capsys, "--topology=v5litepod-16")
    check_sane(v5e, 16, "TPU v5 lite")
    assert v5e["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1} and v5e["memory_per_chip"]["hbm"] == 16 * 2**30
    v4 = compile_json(capsys, "--topology=v4-32", "--gin.MeshConfig.tensor=2", "--gin.ModelConfig.remat='full'")
    check_sane(v4, 16, "TPU v4")
    assert v4["mesh"] == {"data": 1, "fsdp": 8, "tensor": 2} and v4["remat"] == "full"


@needs_libtpu
def test_two_slices_over_dcn(capsys):
    report = compile_json(capsys, "--topology=v5e-16", "--num_slices=2", "--gin.MeshConfig.dcn_data=2")
    check_sane(report, 32, "TPU v5 lite")
    assert report["mesh"] == {"data": 2, "fsdp": 16, "tensor": 1} and report["num_slices"] == 2
    with pytest.raises(SystemExit):  # the mesh must say how the slices are used
        orca_compile.main([*STAGE1_SMALL, "--topology=v5e-16", "--num_slices=2"])
    assert "set --gin.MeshConfig.dcn_data" in capsys.readouterr().err


@needs_libtpu
def test_a_step_that_does_not_fit_exits_non_zero_and_says_what_to_try(capsys):
    # ~1.1B parameters replicated on every chip (pure data parallelism): weights, gradients and Adam
    # moments need more than a v5e chip's 16 GiB.
    big = ["--gin.ModelConfig.d_model=4096", "--gin.ModelConfig.mlp_dim=16384", "--gin.ModelConfig.num_heads=32",
           "--gin.ModelConfig.num_kv_heads=32", "--gin.ModelConfig.num_layers=4", "--gin.MeshConfig.fsdp=1",
           "--gin.MeshConfig.data=-1", "--gin.TrainConfig.batch_size=4"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        orca_compile.main([*STAGE1_SMALL, *big, "--topology=v5e-4", "--json"])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "error: does not fit on v5e-4 (mesh data 4 x fsdp 1 x tensor 1" in out.err
    assert "GiB per chip of the" in out.err and "try --gin.ModelConfig.remat=" in out.err
    report = json.loads(out.out)
    assert report["fits"] is False and report["memory_per_chip"]["needed"] > report["memory_per_chip"]["available"]


@needs_libtpu
def test_xla_estimate_counts_loops_by_their_trip_count():
    """XLA's cost analysis counts a scan's body once; the estimate counts it as often as it runs."""
    device = topology.parse_slice("v5e-4").devices()[0]
    spec = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=jax.sharding.SingleDeviceSharding(device))  # noqa: E731
    scan = lambda x, w: jax.lax.scan(lambda h, wi: (jnp.tanh(h @ wi), None), x, w)[0]  # noqa: E731
    lowered = [jax.jit(scan).lower(spec(2048, 2048), spec(n, 2048, 2048)) for n in (2, 4, 8)]
    programs = [xla_cost.compile_with_hlo(program) for program in lowered]
    assert programs[2][0].cost_analysis()["flops"] == pytest.approx(programs[0][0].cost_analysis()["flops"], rel=0.01)
    e2, e4, e8 = (xla_cost.estimated_seconds(text, device) for _, text in programs)
    assert e2.uncounted_loops == e4.uncounted_loops == e8.uncounted_loops == []
    t2, t4, t8 = e2.seconds, e4.seconds, e8.seconds
    assert t8 - t4 == pytest.approx(2 * (t4 - t2), rel=0.02) and t8 > 3 * t2  # linear in the trip count
    assert t2 > 2 * 2 * 2048**3 / topology.parse_slice("v5e-4").generation.peak_flops  # not faster than peak


@needs_libtpu
def test_splash_attention_compiles_the_real_kernel_for_tpu(capsys, monkeypatch):
    """On this CPU host the mesh's devices are TPUs: splash must lower the Mosaic kernel, not the
    Pallas interpreter that CPU tests use."""
    from orca_jax.model import attention

    modes = []
    local = attention._splash_local
    monkeypatch.setattr(attention, "_splash_local", lambda *a, **k: modes.append(k["interpret"]) or local(*a, **k))
    splash = ["--gin.ModelConfig.attention='splash'", "--gin.ModelConfig.d_model=256",
              "--gin.ModelConfig.num_heads=2", "--gin.ModelConfig.num_kv_heads=2", "--gin.ModelConfig.num_layers=1",
              "--gin.DataConfig.sequence_length=256", "--gin.TrainConfig.batch_size=8"]  # fmt: skip
    report = compile_json(capsys, "--topology=v5litepod-8", *splash)
    assert report["fits"] and report["device_kind"] == "TPU v5 lite"
    assert modes and not any(modes)
    # XLA has no estimate for the Mosaic kernels: they are priced at their FLOPs at peak, not free.
    # Per chip: 1 row, 2 heads of 128, 256 tokens (one causal block); a matmul of [256, 128] x [128, 256]
    # per head. Forward 2, dq 3, dkv 4, and the forward again if remat recomputes it: 9 to 11 of them.
    assert "unpriced_kernels" not in report
    matmul = 2 * 2 * 256 * 256 * 128 / report["peak_flops_per_chip"]
    assert 9 * matmul * 0.999 <= report["estimated_custom_kernel_seconds"] <= 11 * matmul * 1.001
