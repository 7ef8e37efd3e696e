"""orca_jax's and MaxText's LLaMA-13B train steps compiled for the same TPU slice, side by side.

Both programs are compiled on this CPU host through libtpu (no TPU needed), for the run of
configs/runs/orca_stage1.gin: LLaMA-13B, rows of 2,048, 128 rows per step, FSDP over every chip,
fp32 weights with bf16 compute, AdamW. Each compiled program's final HLO goes through the same
estimator (orca_jax/parallel/xla_cost.py: XLA's own per-kernel cycle estimates, loops counted by
their trip counts), and each side's memory per chip is XLA's buffer assignment for its program.
Model FLOPs per token come from one formula (orca_jax/model/flops.py) with each side's vocabulary.

    .venv/bin/python benchmarks/tpu_vs_maxtext.py --topology v5p-128 --remat save_dots --maxtext_remat minimal
    .venv/bin/python benchmarks/tpu_vs_maxtext.py --topology v5litepod-64 --remat full --maxtext_remat full

orca_jax runs `orca-compile` (the run config's own attention, 'splash', unless --attention); MaxText
0.2.5 runs its `train_compile` (model_name=llama2-13b per_device_batch_size=B/chips
ici_fsdp_parallelism=-1 attention=dot_product) in its own Python 3.12 venv, as
../shared/bench/setup_venvs.sh builds it ($VENVS/maxtext). Prints one JSON object; each compile
takes a few minutes and a few GB of host memory.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUN_CONFIG = os.path.join(ROOT, "configs", "runs", "orca_stage1.gin")
MAXTEXT_PYTHON = os.path.join(os.environ.get("VENVS", os.path.expanduser("~/.cache/orca-peer-venvs")), "maxtext",
                              "bin", "python")  # fmt: skip
MAXTEXT_VOCAB = 32000  # llama2-13b's vocabulary in MaxText's model config


def orca_jax_report(topology: str, remat: str, attention: str | None) -> dict:
    cmd = [os.path.join(os.path.dirname(sys.executable), "orca-compile"), f"--gin_file={RUN_CONFIG}",
           f"--topology={topology}", "--json", f"--gin.ModelConfig.remat='{remat}'"]  # fmt: skip
    if attention:
        cmd.append(f"--gin.ModelConfig.attention='{attention}'")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        sys.exit(f"orca-compile failed ({out.returncode}):\n{out.stderr[-3000:]}")
    report = json.loads(out.stdout[out.stdout.index("{") :])
    report["command"] = " ".join(cmd)
    return report


def maxtext_compile(topology: str, remat: str, batch_size: int, chips: int, extra: list[str]) -> dict:
    """MaxText's train_compile for `topology`: its final HLO text, memory stats and command line."""
    if batch_size % chips:
        sys.exit(f"batch {batch_size} does not divide over {chips} chips (MaxText sets a batch per device)")
    if not os.path.exists(MAXTEXT_PYTHON):
        sys.exit(f"no MaxText venv at {MAXTEXT_PYTHON}: run ../shared/bench/setup_venvs.sh (or set VENVS)")
    base = subprocess.run([MAXTEXT_PYTHON, "-c", "import maxtext, os; print(os.path.dirname(maxtext.__file__))"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="maxtext_compile_") as dump:
        base_yml = os.path.join(base, "configs", "base.yml")
        cmd = [MAXTEXT_PYTHON, "-m", "maxtext.trainers.pre_train.train_compile", base_yml,
               f"compile_topology={topology.replace('v5litepod-', 'v5e-')}",  # MaxText's name for v5e slices
               "compile_topology_num_slices=1", "model_name=llama2-13b",
               f"per_device_batch_size={batch_size // chips}", "max_target_length=2048", "ici_fsdp_parallelism=-1",
               "attention=dot_product", f"remat_policy={remat}", "run_name=compare", f"base_output_directory={dump}",
               *extra]  # fmt: skip
        # The same dump options orca_jax's compile passes (xla_cost.compile_with_hlo), through XLA_FLAGS.
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
               "XLA_FLAGS": f"--xla_dump_to={dump}/hlo --xla_dump_hlo_as_text --xla_dump_hlo_pass_re=^$"}  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(f"MaxText's train_compile failed ({out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")
        texts = glob.glob(os.path.join(dump, "hlo", "*train_step*.after_codegen.txt"))
        if len(texts) != 1:
            sys.exit(f"expected one compiled train_step in XLA's dump, found {len(texts)}: {sorted(texts)}")
        with open(texts[0]) as f:
            hlo = f.read()
    stats = re.search(r"Memory analysis: (.*)", out.stdout + out.stderr)
    if not stats:
        sys.exit("MaxText's train_compile printed no 'Memory analysis' line")
    memory = {k: int(v) for k, v in re.findall(r"(\w+)_in_bytes=(\d+)", stats.group(1))}
    return {"hlo": hlo, "memory": memory, "command": " ".join(cmd)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", required=True, help="v5p-128, v5litepod-64, ...")
    p.add_argument("--remat", default="save_dots", help="orca_jax's ModelConfig.remat")
    p.add_argument("--attention", default=None, help="orca_jax's ModelConfig.attention (default: the run config's)")
    p.add_argument("--maxtext_remat", default="minimal", help="MaxText's remat_policy")
    p.add_argument("--maxtext_arg", action="append", default=[], help="another MaxText key=value (repeatable)")
    args = p.parse_args()

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from orca_jax.model import flops
    from orca_jax.model.config import ModelConfig
    from orca_jax.parallel import topology, xla_cost

    ours = orca_jax_report(args.topology, args.remat, args.attention)
    tpu_slice = topology.parse_slice(args.topology)
    device = tpu_slice.devices()[0]
    chips, batch, length = ours["chips"], ours["batch_size"], ours["sequence_length"]
    theirs = maxtext_compile(args.topology, args.maxtext_remat, batch, chips, args.maxtext_arg)
    estimate = xla_cost.estimated_seconds(theirs["hlo"], device)
    seconds = estimate.seconds
    model = ModelConfig(vocab_size=MAXTEXT_VOCAB, d_model=5120, num_layers=40, num_heads=40, mlp_dim=13824)
    model_flops = flops.flops_per_token(model, length) * batch * length
    mem = theirs["memory"]
    peak = ours["peak_flops_per_chip"]

    def row(step: float, flops_per_step: float, total_bytes: int, remat: str) -> dict:
        return {"remat": remat, "estimated_step_seconds": round(step, 4),
                "estimated_mfu": round(flops_per_step / (step * chips * peak), 4),
                "memory_per_chip_gib": round(total_bytes / 2**30, 2)}  # fmt: skip

    maxtext_total = mem["argument_size"] + mem["output_size"] - mem["alias_size"] + mem["temp_size"]
    result = {
        "benchmark": "tpu_vs_maxtext", "topology": args.topology, "chips": chips, "batch": batch, "length": length,
        "orca_jax": {**row(ours["estimated_step_seconds"], ours["model_flops_per_step"],
                           ours["memory_per_chip"]["total"], ours["remat"]),
                     "attention": ours["attention"], "mesh": ours["mesh"], "command": ours["command"],
                     "splash_seconds_at_peak": round(ours.get("estimated_custom_kernel_seconds", 0.0), 4),
                     "unpriced_kernels": ours.get("unpriced_kernels", [])},
        "maxtext": {**row(seconds, model_flops, maxtext_total, args.maxtext_remat), "attention": "dot_product",
                    "uncounted_loops": estimate.uncounted_loops,
                    "unpriced_kernels": estimate.unpriced_kernels, "command": theirs["command"]},
    }  # fmt: skip
    result["orca_jax_over_maxtext_step"] = round(ours["estimated_step_seconds"] / seconds, 4)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
