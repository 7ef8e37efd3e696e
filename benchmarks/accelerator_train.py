"""accelerator_check.py's train-step part: orca_jax's jitted train step against transformers + torch on
the same device, tokens/s and MFU for both, with a bfloat16 matmul peak measured in the same run.

Both sides train the same model (transformers' LlamaForCausalLM built from `checkpoints.hf`'s config
for the orca_jax ModelConfig, same parameter count) on the same fully packed random rows: bfloat16
compute, float32 master weights, AdamW (b1 0.9, b2 0.95, no weight decay), gradient clipping at
global norm 1, loss on every token. orca_jax runs the step orca-train jits (`training.step`), once
with cuDNN attention and once with XLA's on a GPU; torch runs eager, under `torch.autocast`, with
SDPA attention and its default AdamW. FLOPs per token: `orca_jax.model.flops` (6 x matmul weights
+ 12 x layers x length x heads x head size), the same for both sides. Each side times its steps one
by one, waiting for the device after each, after warm-up steps (the first compiles); figures are
the median step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from orca_jax.checkpoints import hf
from orca_jax.model.config import ModelConfig
from orca_jax.model.flops import flops_per_token
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding, topology
from orca_jax.training import step as step_lib
from orca_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer

OPTIMIZER = OptimizerConfig(learning_rate=1e-4, warmup_steps=0, b1=0.9, b2=0.95, weight_decay=0.0, grad_clip_norm=1.0)


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def torch_device(backend: str):
    """The torch device on the hardware JAX runs on, and None; or None and why torch cannot run."""
    try:
        import torch
    except ImportError:
        return None, "skipped: torch is not installed (the `test` extra)"
    if backend == "gpu":
        if not torch.cuda.is_available():
            return None, f"skipped: torch {torch.__version__} has no CUDA here; install a CUDA build of it"
        return torch.device("cuda", 0), None
    return torch.device("cpu"), None


def nominal_peak(device: jax.Device) -> float | None:
    """The data-sheet dense bf16 peak for this device (parallel/topology.py's table), or None. The
    table's H100 figure is the SXM part's: PCIe and NVL cards are slower, so they get None."""
    kind = device.device_kind
    if "H100" in kind and ("PCIe" in kind or "NVL" in kind):
        return None
    return topology.peak_flops_per_device(device)


def best_per_call(call: Callable[[], object], wait: Callable[[object], None], calls: int, repeats: int = 5) -> float:
    """Seconds per call: `calls` calls back to back, then a wait for the last result; best of `repeats`."""
    wait(call())  # compiles, warms up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = call()
        wait(out)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def jax_matmul_peak(sizes: tuple[int, ...]) -> dict[str, float]:
    """FLOP/s of a square bfloat16 matmul (float32 accumulation) by size, with JAX."""
    matmul = jax.jit(lambda a, b: a @ b)
    out = {}
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
        out[str(n)] = 2 * n**3 / best_per_call(lambda a=a: matmul(a, a), jax.block_until_ready, calls=10)
    return out


def torch_matmul_peak(sizes: tuple[int, ...], device) -> dict[str, float]:
    """The same with torch.matmul on `device`."""
    import torch

    wait = (lambda _: torch.cuda.synchronize()) if device.type == "cuda" else (lambda _: None)
    out = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        out[str(n)] = 2 * n**3 / best_per_call(lambda a=a: torch.matmul(a, a), wait, calls=10)
    return out


def random_rows(cfg: ModelConfig, batch: int, length: int) -> dict[str, np.ndarray]:
    """Fully packed rows (one example each) of random tokens, every token in the loss."""
    rng = np.random.default_rng(0)
    return {
        "decoder_input_tokens": rng.integers(3, cfg.vocab_size, (batch, length)).astype(np.int32),
        "decoder_target_tokens": rng.integers(3, cfg.vocab_size, (batch, length)).astype(np.int32),
        "decoder_loss_weights": np.ones((batch, length), np.int32),
        "decoder_segment_ids": np.ones((batch, length), np.int32),
        "decoder_positions": np.tile(np.arange(length, dtype=np.int32), (batch, 1)),
    }


def step_times(step: Callable[[], float], warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """Seconds of each timed step after `warmup` untimed ones; the loss of every step."""
    losses, times = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        losses.append(step())  # returns once the device is done
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times, losses


def orca_jax_row(cfg: ModelConfig, rows: dict[str, np.ndarray], warmup: int, steps: int) -> dict:
    model = Decoder(cfg)
    tx, schedule = make_optimizer(OPTIMIZER, 1000), learning_rate_schedule(OPTIMIZER, 1000)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    with sharding.use_mesh(mesh):
        shardings = sharding.shardings_of(step_lib.abstract_state(model, tx), mesh)
        state = [step_lib.init_state(model, tx, 0, shardings)]  # a list: each step replaces it (donated)
        batch = sharding.global_batch(rows, mesh)
        start = time.perf_counter()
        train_step = step_lib.jit_train_step(model, tx, schedule, shardings, mesh).lower(state[0], batch).compile()
        compile_seconds = time.perf_counter() - start

        def one() -> float:
            state[0], metrics = train_step(state[0], batch)
            return float(metrics["loss"])

        times, losses = step_times(one, warmup, steps)
    return {"compile_seconds": compile_seconds, "step_seconds": times, "loss_first": losses[0], "loss_last": losses[-1]}


def torch_row(cfg: ModelConfig, rows: dict[str, np.ndarray], warmup: int, steps: int, device) -> dict:
    import torch

    row = _torch_steps(cfg, rows, warmup, steps, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the model and optimizer are gone: their memory goes back for JAX's rows
    return row


def _torch_steps(cfg: ModelConfig, rows: dict[str, np.ndarray], warmup: int, steps: int, device) -> dict:
    import torch
    import torch.nn.functional as F
    import transformers

    torch.manual_seed(0)
    config = {k: v for k, v in hf.config_to_hf(cfg, bos_id=1, eos_id=2).items()
              if k not in ("architectures", "model_type", "torch_dtype")}  # fmt: skip
    model = transformers.LlamaForCausalLM._from_config(
        transformers.LlamaConfig(**config, use_cache=False), attn_implementation="sdpa", dtype=torch.float32
    ).to(device)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=OPTIMIZER.learning_rate, betas=(OPTIMIZER.b1, OPTIMIZER.b2),
                            eps=OPTIMIZER.eps, weight_decay=0.0)  # fmt: skip
    inputs = torch.from_numpy(rows["decoder_input_tokens"]).long().to(device)
    targets = torch.from_numpy(rows["decoder_target_tokens"]).long().to(device)

    def one() -> float:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            logits = model(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIMIZER.grad_clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # waits for the device

    times, losses = step_times(one, warmup, steps)
    return {"step_seconds": times, "loss_first": losses[0], "loss_last": losses[-1],
            "same_param_count": params == cfg.num_params()}  # fmt: skip


def train_part(sizes, budget, device, torch_note: str | None) -> dict:
    """sizes and budget: accelerator_check's Sizes and Budget."""
    cfg, b, t = sizes.train_model, sizes.train_batch, sizes.train_length
    kind = jax.devices()[0].device_kind
    peaks = {"jax_bf16_matmul": jax_matmul_peak(sizes.peak_sizes)}
    if device is not None:
        peaks["torch_bf16_matmul"] = torch_matmul_peak(sizes.peak_sizes, device)
    measured = max(v for by_size in peaks.values() for v in by_size.values())
    nominal = nominal_peak(jax.devices()[0])
    fpt = flops_per_token(cfg, t)
    rows_in = random_rows(cfg, b, t)
    variants = ("cudnn", "xla") if jax.default_backend() == "gpu" else ("xla",)
    runs: list[tuple[str, Callable[[], dict], float]] = [
        (f"orca_jax ({a} attention)", lambda a=a: orca_jax_row(dataclasses.replace(cfg, attention=a), rows_in,
                                                               sizes.train_warmup, sizes.train_steps),
         sizes.estimates["train_orca_jax"])
        for a in variants
    ]  # fmt: skip
    runs.insert(0, ("transformers + torch (bf16 autocast)",
                    lambda: torch_row(cfg, rows_in, sizes.train_warmup, sizes.train_steps, device),
                    sizes.estimates["train_torch"]))  # fmt: skip
    out_rows = []
    for name, run, estimate in runs:
        note = budget.skip_note(estimate) or (torch_note if name.startswith("transformers") else None)
        if note:
            out_rows.append({"implementation": name, "status": note})
            continue
        try:
            row = run()
        except Exception as e:  # noqa: BLE001 - one failed row must not hide the others
            out_rows.append({"implementation": name, "status": f"error: {type(e).__name__}: {e}"})
            continue
        seconds = float(np.median(row["step_seconds"]))
        tokens_per_sec = b * t / seconds
        out_rows.append({
            "implementation": name, "status": "ok", "tokens_per_sec": tokens_per_sec,
            "model_tflops_per_sec": tokens_per_sec * fpt / 1e12,
            "mfu_vs_measured_peak": tokens_per_sec * fpt / measured,
            "mfu_vs_nominal_peak": tokens_per_sec * fpt / nominal if nominal else None, **row,
        })  # fmt: skip
    errors = [r["status"] for r in out_rows if r["status"].startswith("error")]
    return {
        "status": errors[0] if errors else "ok", "device": kind,
        "model": {"params": cfg.num_params(), "d_model": cfg.d_model, "num_layers": cfg.num_layers,
                  "num_heads": cfg.num_heads, "mlp_dim": cfg.mlp_dim, "vocab_size": cfg.vocab_size},
        "batch_size": b, "sequence_length": t, "warmup_steps": sizes.train_warmup, "timed_steps": sizes.train_steps,
        "flops_per_token": fpt, "measured_peak_flops": measured, "nominal_peak_flops": nominal, "peaks": peaks,
        "rows": out_rows,
    }  # fmt: skip
