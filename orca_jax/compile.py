"""orca-compile: compile orca-train's train step ahead of time for a TPU slice, on a host without TPUs.

    orca-compile --gin_file=configs/runs/orca_stage1.gin --topology=v5p-128
    orca-compile --gin_file=configs/runs/orca_stage1.gin --topology=v5litepod-128 \\
        --gin.ModelConfig.remat="'full'" --json
    orca-compile ... --topology=v5p-64 --num_slices=2 --gin.MeshConfig.dcn_data=2 --gin.MeshConfig.tensor=4

It builds the step exactly as orca-train does (trainer.build_train_step: same mesh rules, model,
optimizer, shardings and jit), on the compile-only devices libtpu describes for the slice, lowers it
with shapes alone (no parameter is ever allocated: LLaMA-13B compiles in about 2 GB of host
memory) and has XLA's TPU compiler compile it. It prints per-chip memory against the chip's HBM,
FLOPs per step, XLA's estimated step time (its per-kernel estimates summed with loop trip counts;
see parallel/xla_cost.py for why not cost_analysis' own figure) and the MFU and tokens/s that
estimate implies; --json prints the same as one JSON object. It exits with status 2 and says
what to change when the step does not fit.

Any orca-train gin file works. Macros a run leaves required (MODEL_DIR, BASE_CKPT, data folders,
TOKENIZER, NUM_STEPS) name data and checkpoints, which a compile never reads: those not given are
bound to a marker, and only an error names one if it reaches a value the compiled step depends on.
NUM_STEPS only sets the length of the learning-rate schedule, a constant in the program, so without
it the schedule uses TrainConfig's default length. Needs libtpu: pip install -e '.[tpu]'.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import re
import sys
import time
from typing import TYPE_CHECKING

from orca_jax import gin_cli
from orca_jax.errors import ConfigError, UserError, exit_on_user_error

if TYPE_CHECKING:  # the binary imports JAX, TensorFlow and libtpu only once its flags are parsed
    from orca_jax.model.config import ModelConfig
    from orca_jax.parallel.sharding import MeshConfig
    from orca_jax.parallel.topology import TpuSlice
    from orca_jax.training.optimizer import OptimizerConfig
    from orca_jax.training.trainer import TrainConfig

UNSET = "unset:"  # the marker value of a required macro the command line did not bind
GiB = 1024**3


class DoesNotFit(UserError):
    """The step needs more memory per chip than the chip has; `report` says what is known."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from orca_jax import train as train_binary
    from orca_jax.parallel import topology

    parser = argparse.ArgumentParser(prog="orca-compile", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--topology", required=True, help="the TPU slice: v4-32, v5litepod-64, v5p-128, v6e-16, ...")
    parser.add_argument("--num_slices", type=int, default=1, help="slices joined over DCN (multi-slice)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    gin_cli.add_gin_flags(parser)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    tpu_slice = topology.parse_slice(args.topology, args.num_slices)
    # The host compiles on its CPU: the TPU is only the compile target, and a compile run on a TPU
    # VM must not take the chips from a job that is training there.
    if "JAX_PLATFORMS" not in os.environ:
        import jax

        jax.config.update("jax_platforms", "cpu")

    configurables = train_binary.configurables()
    gin_args = [f"--gin_file={f}" for f in args.gin_file] + [f"--gin_search_paths={args.gin_search_paths}"]
    gin_args += rest + unset_required_macros(configurables, args.gin_file, rest, args.gin_search_paths)
    gin_cli.configure("orca-compile", __doc__, configurables, [*gin_args, "--distributed=off"])
    run = train_arguments()
    report = {"gin_files": args.gin_file, **run.pop("notes")}
    try:
        report.update(compile_train_step(tpu_slice, **run))
    except DoesNotFit as e:
        if args.json:
            print(json.dumps({**report, **e.report, "fits": False, "error": str(e)}, indent=2), flush=True)
        raise
    print(json.dumps(report, indent=2) if args.json else format_report(report), flush=True)


def unset_required_macros(configurables: dict, files: list[str], argv: list[str], search_paths: str) -> list[str]:
    """`--gin.NAME=unset:NAME` for every macro the gin files leave required and `argv` does not bind."""
    gin_cli.register({**configurables, "path_join": gin_cli.path_join})
    try:
        gin_cli.parse_gin(files, [], search_paths)
    except ConfigError:  # unset macros, or a real error that the full parse reports again
        pass
    bound = {arg[len("--gin.") :].split("=", 1)[0] for arg in argv if arg.startswith("--gin.")}
    return [
        f"--gin.{name}={UNSET}{name}"
        for name in sorted(gin_cli.macro_names() - bound)
        if str(gin_cli.macro_value(name)) == "%gin.REQUIRED"
    ]


def train_arguments() -> dict:
    """The configs the parsed gin passes to orca-train's `train`, as far as the train step uses them."""
    import gin

    from orca_jax.training import trainer

    bound = gin.get_bindings("train", resolve_references=True)
    defaults = {n: p.default for n, p in inspect.signature(trainer.train).parameters.items()}
    args = {name: bound.get(name, defaults[name]) for name in ("model_config", "optimizer_config", "mesh_config",
                                                               "train_config", "data_config")}  # fmt: skip
    for name, value in args.items():
        if value is inspect.Parameter.empty:
            raise ConfigError(f"the gin files bind no train.{name}: orca-compile compiles what orca-train would run")
    notes = {}
    train_config = args["train_config"]
    if _unset_macro(train_config.num_steps):  # only the schedule's length: a constant in the program
        default = trainer.TrainConfig().num_steps
        notes["num_steps"] = f"{_unset_macro(train_config.num_steps)} unset: the schedule is {default} steps long"
        args["train_config"] = dataclasses.replace(train_config, num_steps=default)
    for name in ("model_config", "optimizer_config", "mesh_config", "train_config"):
        _check_set(args[name])
    data_config = args.pop("data_config")
    if macro := _unset_macro(data_config.sequence_length):
        raise ConfigError(f"DataConfig.sequence_length comes from {macro}, which orca-compile needs: "
                          f"pass --gin.{macro}=...")  # fmt: skip
    return {**args, "sequence_length": data_config.sequence_length, "notes": notes}


def _unset_macro(value: object) -> str:
    return value[len(UNSET) :] if isinstance(value, str) and value.startswith(UNSET) else ""


def _check_set(config: object) -> None:
    for field in dataclasses.fields(config):
        if macro := _unset_macro(getattr(config, field.name)):
            raise ConfigError(f"{type(config).__name__}.{field.name} comes from the macro {macro}, which the train "
                              f"step depends on: pass --gin.{macro}=...")  # fmt: skip


def compile_train_step(
    tpu_slice: TpuSlice,
    model_config: ModelConfig,
    optimizer_config: OptimizerConfig,
    mesh_config: MeshConfig,
    train_config: TrainConfig,
    sequence_length: int,
) -> dict:
    """Compiles orca-train's step for `tpu_slice`; returns the report (sizes in bytes, times in seconds)."""
    import jax

    from orca_jax.parallel import sharding, xla_cost
    from orca_jax.training import flops, trainer

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
    peak = flops.peak_flops_per_device(devices[0])
    model_flops = flops.flops_per_token(model_config, sequence_length) * train_config.batch_size * sequence_length
    seconds, uncounted = xla_cost.estimated_seconds(hlo_text, devices[0])
    report.update({
        "model_flops_per_step": model_flops,
        "model_flops_per_chip": model_flops / chips,
        "peak_flops_per_chip": peak,
        "estimated_step_seconds": seconds,
        "estimated_mfu": model_flops / (seconds * chips * peak),
        "estimated_tokens_per_second": train_config.batch_size * sequence_length / seconds,
        # As XLA's cost analysis gives them: each loop body counted once, unmodelled ops at -1 s (xla_cost.py).
        "xla_cost_analysis": {"flops": cost.get("flops"), "optimal_seconds": cost.get("optimal_seconds")},
    })  # fmt: skip
    if uncounted:
        report["uncounted_loops"] = uncounted
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
    if r.get("uncounted_loops"):
        lines.append(f"warning     loops of unknown trip count counted once: {', '.join(r['uncounted_loops'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
