"""orca_jax's train step with the peer harness's flags, for `../shared/bench/run_all.sh` (EXTRA_PEER).

    CONFIGS="default 100m" PEERS="hf_torch jax_minimal maxtext_minimal" EXTRA_PEER_NAME=orca_jax \\
    EXTRA_PEER_CMD="$PWD/.venv/bin/python $PWD/benchmarks/peer_orca_jax.py {CFG} --steps 5 --warmup 2 \\
      --peak-flops {PEAK}" bash ../shared/bench/run_all.sh

The step is the one orca-train compiles (`step.jit_train_step`: forward, backward, AdamW, its CPU
compiler options) on one device, over fully packed random rows, with the peers' model: untied LM head,
multi-head attention, fp32 everywhere unless --dtype, no remat. The layers run as straight-line code
(`ModelConfig.scan_unroll` = layers, as configs/models/mini.gin sets for the mini-Orca model) unless
--scan_unroll says otherwise; the peer plain-JAX model is unrolled too. Prints the harness's
`RESULT {json}` line (keys as in ../shared/bench/peer_jax_minimal.py).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from orca_jax.model.config import ModelConfig  # noqa: E402
from orca_jax.model.llama import Decoder  # noqa: E402
from orca_jax.parallel import sharding  # noqa: E402
from orca_jax.training import step as step_lib  # noqa: E402
from orca_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer  # noqa: E402


def flops_per_token(vocab: int, hidden: int, mlp: int, layers: int, seq: int) -> int:
    """The harness's formula (../shared/bench/flops.py): 6 x matmul parameters (LM head included,
    input embedding not) + 12 x layers x hidden x sequence."""
    matmul = layers * (4 * hidden * hidden + 3 * hidden * mlp) + hidden * vocab
    return 6 * matmul + 12 * layers * hidden * seq


def packed_batch(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Fully packed rows of random tokens (one example per row), loss on every token."""
    rng = np.random.default_rng(0)
    shape = (args.batch, args.seq)
    return {
        "decoder_input_tokens": rng.integers(3, args.vocab, shape).astype(np.int32),
        "decoder_target_tokens": rng.integers(3, args.vocab, shape).astype(np.int32),
        "decoder_loss_weights": np.ones(shape, np.int32),
        "decoder_segment_ids": np.ones(shape, np.int32),
        "decoder_positions": np.tile(np.arange(args.seq, dtype=np.int32), (args.batch, 1)),
    }


def jitted_step(cfg: ModelConfig, batch: dict[str, np.ndarray]):
    """orca-train's jitted step for `cfg` on one device (run under its mesh), the initial state, and
    `batch` on the device."""
    model = Decoder(cfg)
    opt = OptimizerConfig(learning_rate=1e-4, warmup_steps=0, weight_decay=0.0, grad_clip_norm=0.0)
    tx, schedule = make_optimizer(opt, 1000), learning_rate_schedule(opt, 1000)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    with sharding.use_mesh(mesh):
        shardings = sharding.shardings_of(step_lib.abstract_state(model, tx), mesh)
        state = step_lib.init_state(model, tx, 0, shardings)
        jitted = step_lib.jit_train_step(model, tx, schedule, shardings, mesh)
        on_device = sharding.global_batch(batch, mesh)

    def train_step(state, batch):
        with sharding.use_mesh(mesh):
            return jitted(state, batch)

    return train_step, state, on_device


def train_step_for(args: argparse.Namespace, scan_unroll: int, dtype: str = "float32"):
    """`jitted_step` for the peers' model and packed batch, from the harness's flags."""
    cfg = ModelConfig(
        vocab_size=args.vocab, d_model=args.hidden, mlp_dim=args.intermediate, num_layers=args.layers,
        num_heads=args.heads, dtype=dtype, param_dtype="float32", scan_unroll=scan_unroll,
    )  # fmt: skip
    return jitted_step(cfg, packed_batch(args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in [("vocab", 32000), ("hidden", 512), ("intermediate", 1376), ("layers", 8), ("heads", 8),
                          ("seq", 512), ("batch", 8), ("steps", 5), ("warmup", 2)]:  # fmt: skip
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--peak-flops", type=float, default=0.0, help="fp32 matmul peak for MFU (the harness's)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="activations and matmuls")
    p.add_argument("--scan_unroll", type=int, default=0, help="layers per scan iteration; 0: all (straight-line)")
    args = p.parse_args()

    unroll = args.scan_unroll or args.layers
    start = time.perf_counter()
    train_step, state, batch = train_step_for(args, unroll, args.dtype)
    params = sum(x.size for x in jax.tree.leaves(state.params))
    times, intervals = [], []
    for _ in range(args.warmup):
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)
    warmup_s = time.perf_counter() - start
    for i in range(args.steps):
        epoch, t0 = time.time(), time.perf_counter()
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
        intervals.append([round(epoch, 3), round(time.time(), 3)])
        print(f"  step {i}: {times[-1]:.3f}s loss={float(metrics['loss']):.4f}")

    tokens = args.batch * args.seq
    mean = sum(times) / len(times)
    fpt = flops_per_token(args.vocab, args.hidden, args.intermediate, args.layers, args.seq)
    matmul = fpt // 6 - 2 * args.layers * args.hidden * args.seq
    result = {
        "peer": "orca_jax", "params_total": params, "params_matmul": matmul, "vocab": args.vocab,
        "hidden": args.hidden, "intermediate": args.intermediate, "layers": args.layers, "heads": args.heads,
        "seq": args.seq, "batch": args.batch, "dtype": args.dtype, "scan_unroll": unroll,
        "step_s_mean": mean, "step_s_best": min(times), "warmup_s": warmup_s, "tokens_per_s": tokens / mean,
        "tokens_per_s_best": tokens / min(times), "model_flops_per_token": fpt, "achieved_flops": tokens / mean * fpt,
        "step_intervals_epoch": intervals,
    }  # fmt: skip
    print(f"step time mean {mean:.3f}s best {min(times):.3f}s  ->  {tokens / mean:.1f} tokens/s")
    if args.peak_flops:
        result["peak_flops"] = args.peak_flops
        result["mfu"] = result["achieved_flops"] / args.peak_flops
        print(f"MFU = {100 * result['mfu']:.1f}% of peak {args.peak_flops / 1e9:.1f} GFLOP/s")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
