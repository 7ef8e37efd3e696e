"""orca-train's train step compiled ahead of time for a TPU slice, on a host without TPUs
(what orca-compile runs; see orca_jax/cli/compile.py for the report it prints).

The step is built exactly as orca-train builds it (trainer.build_train_step) over the compile-only
devices libtpu describes for the slice, lowered from shapes alone (no parameter is allocated) and
compiled by XLA's TPU compiler; the report holds per-chip memory against HBM, FLOPs per step, XLA's
estimated step time, and the MFU and tokens/s that estimate implies.
"""

from __future__ import annotations

import math
import re
import time

import jax

from orca_jax.errors import ConfigError, UserError
from orca_jax.model import flops
from orca_jax.model.config import ModelConfig
from orca_jax.parallel import sharding, topology, xla_cost
from orca_jax.parallel.sharding import MeshConfig
from orca_jax.parallel.topology import TpuSlice
from orca_jax.training import trainer
from orca_jax.training.optimizer import OptimizerConfig
from orca_jax.training.trainer import TrainConfig

GiB = 1024**3


class DoesNotFit(UserError):
    """The step needs more memory per chip than the chip has; `report` says what is known."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def compile_train_step(
    tpu_slice: TpuSlice,
    model_config: ModelConfig,
    optimizer_config: OptimizerConfig,
    mesh_config: MeshConfig,
    train_config: TrainConfig,
    sequence_length: int,
) -> dict:
    """Compiles orca-train's step for `tpu_slice`; returns the report (sizes in bytes, times in seconds)."""
    if math.prod(mesh_config.dcn_shape) != tpu_slice.num_slices:
        raise ConfigError(
            f"--num_slices {tpu_slice.num_slices}, but the MeshConfig dcn axes {mesh_config.dcn_shape} span "
            f"{math.prod(mesh_config.dcn_shape)} slice(s): set --gin.MeshConfig.dcn_data (or dcn_fsdp) to match"
        )
    devices = tpu_slice.devices()
    program = trainer.build_train_step(model_config, optimizer_config, mesh_config, train_config, devices)
    state = jax.tree.map(lambda leaf, spec: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=spec),
                         sharding.strip_axis_names(program.boxed_state), program.shardings)  # fmt: skip
    batch = trainer.abstract_batch(train_config.batch_size, sequence_length, program.mesh)
    chips, hbm = len(devices), tpu_slice.generation.hbm_bytes
    report = {
        "topology": tpu_slice.name,
        "topology_name": tpu_slice.topology_name,
        "num_slices": tpu_slice.num_slices,
        "chips": chips,
        "device_kind": devices[0].device_kind,
        "mesh": dict(program.mesh.shape),
        "parameters": model_config.num_params(),
        "remat": model_config.remat,
        "attention": model_config.attention,
        "batch_size": train_config.batch_size,
        "sequence_length": sequence_length,
        "microbatches": train_config.microbatches,
    }
    start = time.time()
    with sharding.use_mesh(program.mesh):
        lowered = program.train_step.lower(state, batch)
    try:
        compiled, hlo_text = xla_cost.compile_with_hlo(lowered)
    except Exception as e:  # XLA raises a bare runtime error; only running out of HBM is the user's to fix
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        message = not_fit_message(report, str(e), hbm, model_config, mesh_config, train_config)
        raise DoesNotFit(message, report) from None
    report["compile_seconds"] = round(time.time() - start, 1)

    mem = compiled.memory_analysis()
    # Donated state buffers are reused for the new state: outputs aliased to arguments count once.
    total = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    report["memory_per_chip"] = {
        "arguments": mem.argument_size_in_bytes,
        "outputs": mem.output_size_in_bytes,
        "aliased": mem.alias_size_in_bytes,
        "temporaries": mem.temp_size_in_bytes,
        "generated_code": mem.generated_code_size_in_bytes,
        "total": total,
        "hbm": hbm,
    }
    report["fits"] = total + mem.generated_code_size_in_bytes <= hbm
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    peak = topology.peak_flops_per_device(devices[0])
    model_flops = flops.flops_per_token(model_config, sequence_length) * train_config.batch_size * sequence_length
    estimate = xla_cost.estimated_seconds(hlo_text, devices[0])
    seconds = estimate.seconds
    report.update({
        "model_flops_per_step": model_flops,
        "model_flops_per_chip": model_flops / chips,
        "peak_flops_per_chip": peak,
        "estimated_step_seconds": seconds,
        # Splash attention's kernels, which XLA gives no estimate: at their FLOPs at peak (xla_cost.py).
        "estimated_custom_kernel_seconds": estimate.custom_kernel_seconds,
        "estimated_mfu": model_flops / (seconds * chips * peak),
        "estimated_tokens_per_second": train_config.batch_size * sequence_length / seconds,
        # As XLA's cost analysis gives them: each loop body counted once, unmodelled ops at -1 s (xla_cost.py).
        "xla_cost_analysis": {"flops": cost.get("flops"), "optimal_seconds": cost.get("optimal_seconds")},
    })  # fmt: skip
    if estimate.uncounted_loops:
        report["uncounted_loops"] = estimate.uncounted_loops
    if estimate.unpriced_kernels:
        report["unpriced_kernels"] = estimate.unpriced_kernels
    if not report["fits"]:
        message = not_fit_message(report, "", hbm, model_config, mesh_config, train_config, need=total)
        raise DoesNotFit(message, report)
    return report


def not_fit_message(
    report: dict,
    compiler_error: str,
    hbm: int,
    model_config: ModelConfig,
    mesh_config: MeshConfig,
    train_config: TrainConfig,
    need: float | None = None,
) -> str:
    """What the step needs per chip, of what, and the knobs that lower it (those not already turned)."""
    available = hbm
    for pattern in (r"\(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)",
                    r"Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm"):  # fmt: skip
        if match := re.search(pattern, compiler_error):
            unit = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
            need = float(match.group(1)) * unit[match.group(2)]
            available = float(match.group(3)) * unit[match.group(4)]
            break
    report["memory_per_chip"] = {"needed": need, "available": available, "hbm": hbm}
    tries = []
    if model_config.remat != "full":
        tries.append("--gin.ModelConfig.remat=\"'full'\"")
    if mesh_config.fsdp != -1 or mesh_config.data != 1:
        tries.append("more fsdp (--gin.MeshConfig.data=1 --gin.MeshConfig.fsdp=-1)")
    tries.append(f"--gin.MeshConfig.tensor={mesh_config.tensor * 2}")
    tries.append(f"--gin.TrainConfig.microbatches={train_config.microbatches * 2}")
    tries.append("a bigger slice")
    mesh = " x ".join(f"{k} {v}" for k, v in report["mesh"].items())
    where = f"{report['topology']} (mesh {mesh}, batch {report['batch_size']} x {report['sequence_length']})"
    needs = (f"needs {need / GiB:.2f} GiB per chip of the {available / GiB:.2f} GiB XLA can use "
             f"({hbm / GiB:.0f} GiB HBM)" if need else "runs out of HBM")  # fmt: skip
    detail = "" if need else f" ({' '.join(compiler_error.split())[:300]})"
    return f"does not fit on {where}: {needs}{detail}; try {', '.join(tries)}"


def format_report(r: dict) -> str:
    m = r["memory_per_chip"]
    gib = lambda b: f"{b / GiB:8.2f} GiB" if abs(b) >= GiB / 10 else f"{b / 2**20:8.2f} MiB"  # noqa: E731
    mesh = " x ".join(f"{k} {v}" for k, v in r["mesh"].items())
    slices = f"{r['num_slices']} x " if r["num_slices"] > 1 else ""
    lines = [
        f"{slices}{r['topology']} ({r['topology_name']}, {r['device_kind']}): {r['chips']} chips, "
        f"compiled in {r['compile_seconds']} s",
        f"model       {r['parameters'] / 1e9:.2f}B parameters, remat {r['remat']}, attention {r['attention']}",
        f"mesh        {mesh}; batch {r['batch_size']} x {r['sequence_length']}, {r['microbatches']} microbatch(es)",
        *(f"note        {v}" for k, v in r.items() if k == "num_steps"),
        "memory per chip:",
        f"  arguments    {gib(m['arguments'])}   train state and batch",
        f"  outputs      {gib(m['outputs'])}   new state and metrics",
        f"  aliased      {gib(-m['aliased'])}   outputs written into the donated state",
        f"  temporaries  {gib(m['temporaries'])}",
        f"  total        {gib(m['total'])}   of {m['hbm'] / GiB:.0f} GiB HBM "
        f"({'fits' if r['fits'] else 'does NOT fit'}; generated code {m['generated_code'] / 2**20:.1f} MiB more)",
        f"FLOPs/step  {r['model_flops_per_step']:.4g} (model FLOPs, remat recompute excluded), "
        f"{r['model_flops_per_chip']:.4g} per chip",
        f"XLA's estimated step time {r['estimated_step_seconds']:.3f} s: MFU {r['estimated_mfu']:.1%} "
        f"at {r['peak_flops_per_chip'] / 1e12:.0f} TFLOP/s per chip, "
        f"{r['estimated_tokens_per_second']:,.0f} tokens/s (row slots, padding included)",
    ]
    if r.get("estimated_custom_kernel_seconds"):
        splash = r["estimated_custom_kernel_seconds"]
        lines.append(f"            of which splash attention {splash:.3f} s: its FLOPs at peak (XLA has no "
                     "estimate for Pallas kernels)")  # fmt: skip
    if r.get("uncounted_loops"):
        lines.append(f"warning     loops of unknown trip count counted once: {', '.join(r['uncounted_loops'])}")
    if r.get("unpriced_kernels"):
        lines.append(
            f"warning     Pallas kernels with no estimate, counted as free: {', '.join(r['unpriced_kernels'])}"
        )
    return "\n".join(lines)
