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
import os
import sys

from orca_jax.cli import gin_flags
from orca_jax.errors import ConfigError, exit_on_user_error

UNSET = "unset:"  # the marker value of a required macro the command line did not bind


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from orca_jax.cli import train as train_binary
    from orca_jax.parallel import topology
    from orca_jax.training import aot

    parser = argparse.ArgumentParser(prog="orca-compile", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--topology", required=True, help="the TPU slice: v4-32, v5litepod-64, v5p-128, v6e-16, ...")
    parser.add_argument("--num_slices", type=int, default=1, help="slices joined over DCN (multi-slice)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    gin_flags.add_gin_flags(parser)
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
    gin_flags.configure("orca-compile", __doc__, configurables, [*gin_args, "--distributed=off"])
    run = train_arguments()
    report = {"gin_files": args.gin_file, **run.pop("notes")}
    try:
        report.update(aot.compile_train_step(tpu_slice, **run))
    except aot.DoesNotFit as e:
        if args.json:
            print(json.dumps({**report, **e.report, "fits": False, "error": str(e)}, indent=2), flush=True)
        raise
    print(json.dumps(report, indent=2) if args.json else aot.format_report(report), flush=True)


def unset_required_macros(configurables: dict, files: list[str], argv: list[str], search_paths: str) -> list[str]:
    """`--gin.NAME=unset:NAME` for every macro the gin files leave required and `argv` does not bind."""
    gin_flags.register({**configurables, "path_join": gin_flags.path_join})
    try:
        gin_flags.parse_gin(files, [], search_paths)
    except ConfigError:  # unset macros, or a real error that the full parse reports again
        pass
    bound = {arg[len("--gin.") :].split("=", 1)[0] for arg in argv if arg.startswith("--gin.")}
    return [
        f"--gin.{name}={UNSET}{name}"
        for name in sorted(gin_flags.macro_names() - bound)
        if str(gin_flags.macro_value(name)) == "%gin.REQUIRED"
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


if __name__ == "__main__":
    main()
