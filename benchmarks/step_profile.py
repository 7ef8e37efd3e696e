"""Where a CPU train step's time goes, kernel by kernel: XLA:CPU's own trace of orca-train's step.

    .venv/bin/python benchmarks/step_profile.py                    # the peer harness's `default` model
    .venv/bin/python benchmarks/step_profile.py --hidden 768 --intermediate 2048 --heads 12   # `100m`

Runs the step `orca-train` compiles (training/step.py: forward, backward, AdamW; fp32; one device)
under `jax.profiler` with XLA's per-kernel trace events on (`--xla_cpu_enable_xprof_traceme`), after
one compiling step, and sums each kernel's time over the traced steps. Kernels are named as in the
compiled HLO (`dot.12`, `loop_transpose_fusion.3`, `wrapped_exp`, ...); `by_kind` groups them by that
name without its number. XLA:CPU may run independent kernels side by side, so shares are of summed
kernel time, not of wall time. Prints one JSON object.

What the trace does not see: a matmul XLA:CPU hands to Eigen (`dot.N`, when YNNPACK's dot fusions
are off, as orca-train compiles the step) runs as tasks in Eigen's thread pool, and the trace's
`dot.N` event times only its dispatch. `untraced_seconds_per_step` (the step's wall time less the
traced kernel time) is then mostly those matmuls. With YNNPACK's fusions on (XLA's default, and
orca_jax before commit 9ad578c) the matmuls are traced as `ynn_fusion`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

os.environ["JAX_PLATFORMS"] = "cpu"  # libtpu's profiler plugin, when installed, crashes a CPU trace
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_orca_jax import flops_per_token, train_step_for  # noqa: E402

# Executor and thread-pool markers, Python frames, and loops (whose kernels have events of their own).
NOT_KERNELS = re.compile(r"^(end: |ThreadpoolListener|ThunkExecutor|\$|(while|conditional|call)(\.\d+)?$)")


def kernel_seconds(trace_dir: str) -> dict[str, float]:
    """Seconds per kernel name, summed over the threads XLA:CPU runs kernels on (its client's and
    Eigen's pool)."""
    from jax.profiler import ProfileData

    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    totals: dict[str, float] = collections.Counter()
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            if not line.name.startswith(("tf_XLAPjRtCpuClient", "tf_XLAEigen")):
                continue
            for event in line.events:
                if not NOT_KERNELS.match(event.name):
                    totals[event.name] += event.duration_ns / 1e9
    return dict(totals)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in [("vocab", 32000), ("hidden", 512), ("intermediate", 1376), ("layers", 8), ("heads", 8),
                          ("seq", 512), ("batch", 8), ("steps", 2)]:  # fmt: skip
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--scan_unroll", type=int, default=1, help="layers per scan iteration (orca-train's default: 1)")
    p.add_argument("--top", type=int, default=15, help="kernels listed by name")
    args = p.parse_args()

    train_step, state, batch = train_step_for(args, args.scan_unroll)
    state, metrics = train_step(state, batch)  # compiles
    jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory(prefix="step_profile_") as trace_dir:
        jax.profiler.start_trace(trace_dir)
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = train_step(state, batch)
            jax.block_until_ready(metrics)
        wall = (time.perf_counter() - start) / args.steps
        jax.profiler.stop_trace()
        kernels = {k: v / args.steps for k, v in kernel_seconds(trace_dir).items()}
    total = sum(kernels.values())
    by_kind: dict[str, float] = collections.Counter()
    for name, seconds in kernels.items():
        by_kind[re.sub(r"\.\d+$", "", name)] += seconds
    share = lambda items: [{"kernel": k, "seconds": round(s, 4), "share": round(s / total, 4)}  # noqa: E731
                           for k, s in sorted(items, key=lambda kv: -kv[1])[: args.top]]  # fmt: skip
    tokens = args.batch * args.seq
    print(json.dumps({
        "benchmark": "step_profile", "scan_unroll": args.scan_unroll, "step_seconds": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1), "model_gflop_per_s": round(tokens * flops_per_token(
            args.vocab, args.hidden, args.intermediate, args.layers, args.seq) / wall / 1e9, 1),
        "kernel_seconds_per_step": round(total, 3), "untraced_seconds_per_step": round(max(wall - total, 0.0), 3),
        "by_kind": share(by_kind.items()),
        "kernels": share(kernels.items()),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
