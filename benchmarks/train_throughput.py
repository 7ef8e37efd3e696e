"""Training throughput on this machine: orca_jax's train step against PyTorch, in one invocation.

    python benchmarks/train_throughput.py                 # bench_small, then the ~100M config
    python benchmarks/train_throughput.py --configs bench_small --steps 3

For each config, one after the other on the same machine: the orca_jax train step (the function
orca-train runs: forward, backward, AdamW, fp32), then the same model and optimizer in PyTorch
(transformers' LlamaForCausalLM, torch.optim.AdamW, fp32, the same threads), on the same random
token rows. MFU is against this CPU's fp32 matmul peak, measured first in the same run (the best of
a 2048^3 matmul in JAX, PyTorch and NumPy). FLOPs per token as in orca_jax/model/flops.py.
Prints one JSON line per config and implementation; orca_jax's line has `ratio_vs_pytorch`.
Needs the `test` extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from orca_jax.model import flops
from orca_jax.model.config import ModelConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_orca_jax import jitted_step  # noqa: E402  (a sibling script: the step as the peer harness times it)

CONFIGS = {  # (model, batch, sequence length)
    "bench_small": (dict(vocab_size=32000, d_model=512, mlp_dim=1376, num_layers=8, num_heads=8), 8, 512),
    "100m": (dict(vocab_size=32000, d_model=768, mlp_dim=2048, num_layers=8, num_heads=12), 4, 512),
}


def matmul_peak() -> float:
    """The best fp32 FLOP/s of a 2048^3 matmul here, in JAX, PyTorch and NumPy."""
    import torch

    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    x, t = jax.numpy.asarray(a), torch.from_numpy(a)
    f = jax.jit(lambda x: x @ x)
    runs = {"jax": lambda: f(x).block_until_ready(), "torch": lambda: t @ t, "numpy": lambda: a @ a}
    best = 0.0
    for fn in runs.values():
        fn()
        start = time.perf_counter()
        for _ in range(5):
            fn()
        best = max(best, 2 * n**3 * 5 / (time.perf_counter() - start))
    return best


def orca_jax_step_seconds(cfg: ModelConfig, batch: dict, steps: int) -> float:
    train_step, state, on_device = jitted_step(cfg, batch)
    state, metrics = train_step(state, on_device)  # compiles
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(state, on_device)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps


def pytorch_step_seconds(cfg: ModelConfig, batch: dict, steps: int) -> float:
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.kv_heads,
        rms_norm_eps=cfg.norm_eps, max_position_embeddings=4096, tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    inputs = torch.from_numpy(batch["decoder_input_tokens"]).long()
    labels = torch.from_numpy(batch["decoder_target_tokens"]).long()

    def step():
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="bench_small,100m")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    peak = matmul_peak()
    for name in args.configs.split(","):
        fields, rows, length = CONFIGS[name]
        cfg = ModelConfig(**fields, dtype="float32")
        rng = np.random.default_rng(0)
        batch = {
            "decoder_input_tokens": rng.integers(3, cfg.vocab_size, (rows, length)).astype(np.int32),
            "decoder_target_tokens": rng.integers(3, cfg.vocab_size, (rows, length)).astype(np.int32),
            "decoder_loss_weights": np.ones((rows, length), np.int32),
            "decoder_segment_ids": np.ones((rows, length), np.int32),
            "decoder_positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1)),
        }
        per_step = flops.flops_per_token(cfg, length) * rows * length
        seconds = {"orca_jax": orca_jax_step_seconds(cfg, batch, args.steps),
                   "pytorch": pytorch_step_seconds(cfg, batch, args.steps)}  # fmt: skip
        for impl, s in seconds.items():
            line = {
                "benchmark": "train_throughput", "config": name, "implementation": impl, "params": cfg.num_params(),
                "batch": rows, "sequence_length": length, "step_seconds": round(s, 3),
                "tokens_per_sec": round(rows * length / s, 1), "model_gflops_per_sec": round(per_step / s / 1e9, 1),
                "measured_peak_gflops_per_sec": round(peak / 1e9, 1), "mfu": round(per_step / s / peak, 4),
            }  # fmt: skip
            if impl == "orca_jax":
                line["ratio_vs_pytorch"] = round(seconds["pytorch"] / s, 3)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
