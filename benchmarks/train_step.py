"""Times the sharded train step (the one orca-train runs) on this machine's devices; prints one JSON line.

    python benchmarks/train_step.py          # the mini-Orca model and batch of configs/runs/mini_orca.gin
    python benchmarks/train_step.py --scan_unroll 4   # the same, its 4 layers as straight-line code
    python benchmarks/train_step.py --d_model 128 --num_layers 4 --num_heads 4 --mlp_dim 384
    python benchmarks/train_step.py --bench_small --remat full   # issue 3's bench_small model

Rows are fully packed random tokens, so tokens/s counts every row slot. FLOPs per token follow
nanoGPT's estimate: 6 * (non-embedding parameters + LM head) + 12 * layers * d_model * sequence length
(attention scores and values, forward and backward, for the full T x T square XLA computes).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding
from orca_jax.training import step as step_lib
from orca_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d_model", type=int, default=64)
    p.add_argument("--num_layers", type=int, default=4)
    p.add_argument("--num_heads", type=int, default=2)
    p.add_argument("--mlp_dim", type=int, default=256)
    p.add_argument("--vocab_size", type=int, default=640)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch_size", type=int, default=12)
    p.add_argument("--sequence_length", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--remat", default="none", choices=("none", "full", "save_dots"))
    p.add_argument("--scan_unroll", type=int, default=1, help="layers per iteration of the layer scan")
    p.add_argument(
        "--bench_small", action="store_true", help="vocab 32000, d 512, MLP 1376, 8 layers, 8 heads, 8 x 512"
    )
    args = p.parse_args()
    if args.bench_small:
        args.vocab_size, args.d_model, args.mlp_dim, args.num_layers, args.num_heads = 32000, 512, 1376, 8, 8
        args.batch_size, args.sequence_length = 8, 512

    cfg = ModelConfig(
        vocab_size=args.vocab_size,
        d_model=args.d_model,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        mlp_dim=args.mlp_dim,
        dtype=args.dtype,
        remat=args.remat,
        scan_unroll=args.scan_unroll,
    )
    model = Decoder(cfg)
    opt = OptimizerConfig()
    tx, schedule = make_optimizer(opt, 1000), learning_rate_schedule(opt, 1000)
    mesh = sharding.make_mesh(sharding.MeshConfig())
    b, t = args.batch_size, args.sequence_length
    rng = np.random.default_rng(0)
    batch = {
        "decoder_input_tokens": rng.integers(4, args.vocab_size, (b, t)).astype(np.int32),
        "decoder_target_tokens": rng.integers(4, args.vocab_size, (b, t)).astype(np.int32),
        "decoder_loss_weights": np.ones((b, t), np.int32),
        "decoder_segment_ids": np.ones((b, t), np.int32),
        "decoder_positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
    }
    with sharding.use_mesh(mesh):
        shardings = sharding.shardings_of(step_lib.abstract_state(model, tx), mesh)
        state = step_lib.init_state(model, tx, 0, shardings)
        train_step = step_lib.jit_train_step(model, tx, schedule, shardings, mesh)
        global_batch = sharding.global_batch(batch, mesh)
        start = time.perf_counter()
        train_step = train_step.lower(state, global_batch).compile()
        temp_bytes = train_step.memory_analysis().temp_size_in_bytes
        state, metrics = train_step(state, global_batch)
        jax.block_until_ready(metrics)
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = train_step(state, global_batch)
        jax.block_until_ready(metrics)
        step_seconds = (time.perf_counter() - start) / args.steps

    embedding = cfg.padded_vocab_size * cfg.d_model
    dense = cfg.num_params() - embedding * (1 if cfg.tie_embeddings else 2) + embedding
    flops_per_token = 6 * dense + 12 * cfg.num_layers * cfg.d_model * t
    tokens_per_sec = b * t / step_seconds
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
                "machine": platform.machine(),
                "params": cfg.num_params(),
                "remat": args.remat,
                "scan_unroll": args.scan_unroll,
                "batch_size": b,
                "sequence_length": t,
                "step_seconds": round(step_seconds, 4),
                "first_step_seconds_with_compile": round(compile_seconds, 2),
                "tokens_per_sec": round(tokens_per_sec),
                "temp_memory_gb": round(temp_bytes / 1e9, 3),
                "model_tflops_per_sec": round(flops_per_token * tokens_per_sec / 1e12, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
