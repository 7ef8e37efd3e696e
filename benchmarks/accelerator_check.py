"""The GPU check, in under 5 minutes on one NVIDIA GPU: three parts, one JSON object each on stdout,
then a summary object.

    attention_parity  cuDNN attention (`ModelConfig.attention = "cudnn"`) against orca_jax's XLA
                      attention in bfloat16 on packed rows (several segments per row, padding, GQA):
                      values and gradients of the kernel, and the whole Decoder's logits.
    train_step        tokens/s and MFU of orca_jax's jitted train step (bfloat16 compute, float32
                      master weights, AdamW) against transformers' LlamaForCausalLM + torch AdamW
                      under bfloat16 autocast, same model and batch, same GPU (accelerator_train.py).
    decode            orca_jax's KV-cache `generate` against transformers' `generate` on the same
                      weights (benchmarks/decode.py's building blocks), batch 1 and 16, greedy
                      tokens compared.

On a GPU machine, from the project root (the venv as `make .venv/.installed` builds it; its jax is
the CPU build, and the torch it gets from PyPI must be a CUDA build, which Linux wheels are):

    make .venv/.installed
    .venv/bin/pip install "jax[cuda12]==$(.venv/bin/python -c 'import jax; print(jax.__version__)')"
    .venv/bin/python -c "import jax, torch; print(jax.devices(), torch.cuda.is_available())"
    .venv/bin/python benchmarks/accelerator_check.py

On CPU, `--quick` runs every part at toy sizes as a smoke test (the attention part says it was
skipped: it needs an NVIDIA GPU); its figures say nothing about a GPU:

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/accelerator_check.py --quick

A part that would overrun `--budget_seconds` (270 by default) is skipped with a note. Exit status 1
when a comparison fails or a part raises (the others still run), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable

# JAX takes 75% of the GPU's memory at start by default, which would leave torch too little for its
# side of the comparison; with this, each library allocates what it uses.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from orca_jax.errors import UserError, exit_on_user_error  # noqa: E402
from orca_jax.model import attention  # noqa: E402
from orca_jax.model.config import ModelConfig  # noqa: E402
from orca_jax.model.llama import Decoder, init_params  # noqa: E402
from orca_jax.parallel import sharding  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load_sibling(name: str):
    """A module of benchmarks/ by file name (the folder is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


decode_bench = load_sibling("decode")
train_bench = load_sibling("accelerator_train")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every shape the check uses; `GPU` is the real check, `QUICK` the CPU smoke run."""

    attn_batch: int
    attn_length: int
    attn_heads: int
    attn_kv_heads: int
    attn_head_size: int
    parity_model: ModelConfig  # the Decoder whose logits are compared
    train_model: ModelConfig
    train_batch: int
    train_length: int
    train_warmup: int
    train_steps: int
    decode_model: ModelConfig
    decode_prompt: int
    decode_new: int
    decode_batches: tuple[int, ...]
    decode_rounds: int
    peak_sizes: tuple[int, ...]
    # Seconds each part is expected to take: guesses made before any GPU run, used only to skip a
    # part that would overrun the budget. Replace them with what the first GPU run printed.
    estimates: dict


GPU = Sizes(
    attn_batch=2, attn_length=1024, attn_heads=16, attn_kv_heads=4, attn_head_size=128,
    parity_model=ModelConfig(vocab_size=32000, d_model=1024, num_layers=2, num_heads=8, num_kv_heads=2,
                             mlp_dim=2816, dtype="bfloat16"),
    # 536M parameters, 8 x 2048 tokens per step, head size 128 (cuDNN's fast path)
    train_model=ModelConfig(vocab_size=32000, d_model=2048, num_layers=8, num_heads=16, mlp_dim=5504,
                            dtype="bfloat16"),
    train_batch=4, train_length=2048, train_warmup=2, train_steps=8,
    decode_model=decode_bench.BENCH_SMALL, decode_prompt=64, decode_new=64, decode_batches=(1, 16), decode_rounds=3,
    peak_sizes=(4096, 8192),
    estimates={"attention_parity": 45, "train_torch": 30, "train_orca_jax": 75, "decode": 40},
)  # fmt: skip
QUICK = Sizes(
    attn_batch=2, attn_length=128, attn_heads=4, attn_kv_heads=2, attn_head_size=32,
    parity_model=ModelConfig(vocab_size=512, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
                             dtype="bfloat16"),
    train_model=ModelConfig(vocab_size=512, d_model=64, num_layers=2, num_heads=2, mlp_dim=128, dtype="bfloat16"),
    train_batch=2, train_length=64, train_warmup=1, train_steps=2,
    decode_model=ModelConfig(vocab_size=1024, d_model=64, num_layers=2, num_heads=4, mlp_dim=128, dtype="float32"),
    decode_prompt=8, decode_new=8, decode_batches=(1, 16), decode_rounds=1,
    peak_sizes=(256, 512),
    estimates={"attention_parity": 0, "train_torch": 0, "train_orca_jax": 0, "decode": 0},
)  # fmt: skip


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def skip_note(self, estimate: float) -> str | None:
        """None if a part expected to take `estimate` seconds fits, else why it is skipped."""
        if self.elapsed() + estimate <= self.seconds:
            return None
        return (f"skipped: time budget ({self.elapsed():.0f} s of {self.seconds:.0f} s used, "
                f"this part needs about {estimate:.0f} s)")  # fmt: skip


def emit(record: dict) -> dict:
    print(json.dumps({"check": "accelerator_check", **record}), flush=True)
    return record


def guarded(part: str, fn: Callable[[], dict]) -> dict:
    """fn's record, or an error record (traceback on stderr) so that the other parts still run."""
    try:
        return {"part": part, **fn()}
    except Exception as e:  # noqa: BLE001 - reported in the JSON; the check goes on
        traceback.print_exc()
        return {"part": part, "status": f"error: {type(e).__name__}: {e}"}


# Part 1: attention parity.


def packed_segments(batch: int, length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Segment ids and positions [B, T] of packed rows: 3 to 6 examples of random lengths, then 5-25%
    padding (segment 0), positions restarting at 0 in every example."""
    rng = np.random.default_rng(seed)
    segments, positions = np.zeros((batch, length), np.int32), np.zeros((batch, length), np.int32)
    for row in range(batch):
        real = length - int(rng.integers(length // 20, length // 4))
        cuts = np.sort(rng.choice(np.arange(1, real), size=int(rng.integers(2, 6)), replace=False))
        for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, real], strict=True)):
            segments[row, a:b], positions[row, a:b] = i + 1, np.arange(b - a)
    return segments, positions


def compare(candidate, baseline, reference, real: np.ndarray) -> dict:
    """candidate and baseline: the same bfloat16 computation two ways; reference: it in float32.
    They agree when, over the real tokens, the two differ by at most twice the baseline's own error
    against float32 plus bfloat16's rounding step at the largest magnitude: as close as two
    computations each as accurate as the baseline can be. Padding rows must be finite too (a NaN
    there reaches the loss through the next layer's keys and values)."""
    c, b, r = (np.asarray(x, np.float32) for x in (candidate, baseline, reference))
    where = np.broadcast_to(real.reshape(real.shape + (1,) * (c.ndim - real.ndim)), c.shape)
    diff = float(np.max(np.abs(c - b), where=where, initial=0.0))
    baseline_error = float(np.max(np.abs(b - r), where=where, initial=0.0))
    scale = float(np.max(np.abs(r), where=where, initial=0.0))
    tolerance = 2 * baseline_error + float(jnp.finfo(jnp.bfloat16).eps) * scale
    finite = bool(np.isfinite(c).all() and np.isfinite(b).all())
    return {
        "pass": finite and diff <= tolerance, "max_abs_diff": diff, "tolerance": tolerance, "finite": finite,
        "xla_error_vs_float32": baseline_error,
        "candidate_error_vs_float32": float(np.max(np.abs(c - r), where=where, initial=0.0)),
    }  # fmt: skip


def kernel_parity(candidate: Callable, sizes: Sizes, seed: int = 0) -> dict:
    """`candidate(q, k, v, mask)` against `attention.xla_attention` in bfloat16: outputs, and the
    gradients of q, k and v under a random cotangent on the real tokens."""
    b, t, h, kv, e = sizes.attn_batch, sizes.attn_length, sizes.attn_heads, sizes.attn_kv_heads, sizes.attn_head_size
    segments, _ = packed_segments(b, t, seed)
    rng = np.random.default_rng(seed)
    q32, k32, v32 = (jnp.asarray(rng.standard_normal(s), jnp.bfloat16).astype(jnp.float32)
                     for s in ((b, t, h, e), (b, t, kv, e), (b, t, kv, e)))  # fmt: skip
    real = segments > 0
    cotangent = jnp.asarray(rng.standard_normal((b, t, h, e)) * real[..., None, None], jnp.float32)
    slots = jnp.arange(t)
    mask = attention.attention_mask(slots[None], jnp.asarray(segments), slots, jnp.asarray(segments))

    def run(fn, dtype):
        loss = lambda q, k, v: jnp.sum(fn(q, k, v, mask).astype(jnp.float32) * cotangent)  # noqa: E731
        inputs = [x.astype(dtype) for x in (q32, k32, v32)]
        out = jax.jit(lambda q, k, v: fn(q, k, v, mask))(*inputs)
        return out, jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*inputs)

    with jax.default_matmul_precision("highest"):  # a true float32 reference (no TF32 on GPUs)
        ref_out, ref_grads = run(attention.xla_attention, jnp.float32)
    xla_out, xla_grads = run(attention.xla_attention, jnp.bfloat16)
    cand_out, cand_grads = run(candidate, jnp.bfloat16)
    grads = {
        name: compare(c, x, r, real) for name, c, x, r in zip("qkv", cand_grads, xla_grads, ref_grads, strict=True)
    }
    return {
        "shape": {"batch": b, "length": t, "heads": h, "kv_heads": kv, "head_size": e,
                  "segments_per_row": [int(s.max()) for s in segments],
                  "padding_per_row": [int((s == 0).sum()) for s in segments]},
        "output": compare(cand_out, xla_out, ref_out, real), "grads": grads,
    }  # fmt: skip


def decoder_parity(cfg: ModelConfig, batch: int, length: int, seed: int = 0) -> dict:
    """The whole Decoder's float32 logits with attention "cudnn" against "xla", same parameters."""
    segments, positions = packed_segments(batch, length, seed)
    tokens = np.where(segments > 0, np.random.default_rng(seed).integers(3, cfg.vocab_size, segments.shape), 0)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])

    def logits(config: ModelConfig):
        model = Decoder(config)
        with sharding.use_mesh(mesh):
            return jax.jit(lambda p: model.apply({"params": p}, tokens, positions, segments))(params)

    with sharding.use_mesh(mesh):
        params = sharding.strip_axis_names(jax.jit(lambda: init_params(Decoder(cfg), jax.random.key(seed)))())
    with jax.default_matmul_precision("highest"):
        reference = logits(dataclasses.replace(cfg, dtype="float32", attention="xla"))
    xla = logits(dataclasses.replace(cfg, attention="xla"))
    cudnn = logits(dataclasses.replace(cfg, attention="cudnn"))
    return {"params": cfg.num_params(), "batch": batch, "length": length,
            **compare(cudnn, xla, reference, segments > 0)}  # fmt: skip


def attention_part(sizes: Sizes) -> dict:
    if jax.default_backend() != "gpu":
        return {"status": "skipped: needs an NVIDIA GPU", "backend": jax.default_backend()}
    kernel = kernel_parity(attention.cudnn_attention, sizes)
    decoder = decoder_parity(sizes.parity_model, sizes.attn_batch, sizes.attn_length)
    ok = kernel["output"]["pass"] and all(g["pass"] for g in kernel["grads"].values()) and decoder["pass"]
    return {"status": "pass" if ok else "fail", "kernel": kernel, "decoder_logits": decoder}


# Part 3: decoding.


def decode_part(sizes: Sizes, torch_device) -> dict:
    """Both sides in true float32 (no TF32), so that greedy tokens are comparable."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = sizes.decode_model
    model, mesh, params = decode_bench.build(cfg, jax.devices()[0])
    reference = decode_bench.transformers_reference(cfg, params, torch_device)
    rows = []
    with jax.default_matmul_precision("highest"):
        for b in sizes.decode_batches:
            prompts = decode_bench.random_prompts(cfg, b, sizes.decode_prompt)
            ours, prepare_seconds = decode_bench.orca_jax_call(model, params, mesh, prompts, sizes.decode_new)
            calls = {
                "orca_jax_kv_cache": ours,
                "transformers_generate": decode_bench.transformers_call(reference, prompts, sizes.decode_new),
            }
            tokens, times = decode_bench.take_turns(calls, sizes.decode_rounds, mesh)
            median = {name: float(np.median(t)) for name, t in times.items()}
            rows.append({
                "batch_size": b, "prompt_tokens": sizes.decode_prompt, "new_tokens": sizes.decode_new,
                **{f"{name}_tokens_per_sec": b * sizes.decode_new / median[name] for name in calls},
                **{f"{name}_seconds_per_round": times[name] for name in calls},
                "ratio_vs_transformers": median["transformers_generate"] / median["orca_jax_kv_cache"],
                "prepare_seconds": prepare_seconds,
                "same_tokens": tokens["orca_jax_kv_cache"] == tokens["transformers_generate"],
            })  # fmt: skip
    ok = all(r["same_tokens"] for r in rows)
    return {"status": "pass" if ok else "fail", "params": cfg.num_params(), "dtype": "float32", "rows": rows}


def failed(status: str) -> bool:
    return status == "fail" or status.startswith("error")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes: a CPU smoke run of every part")
    p.add_argument("--budget_seconds", type=float, default=270.0, help="skip parts that would end after this")
    args = p.parse_args(argv)
    backend = jax.default_backend()
    if backend != "gpu" and not args.quick:
        raise UserError(
            f"jax sees no GPU (backend {backend}): install jax[cuda12] at the venv's jax version (see "
            "benchmarks/accelerator_check.py's docstring), or pass --quick for the CPU smoke run"
        )
    sizes = QUICK if args.quick else GPU
    budget = Budget(args.budget_seconds)
    torch_device, torch_note = train_bench.torch_device(backend)
    records = []

    def part(name: str, fn: Callable[[], dict], estimate: float, needs_torch: bool = False) -> None:
        note = budget.skip_note(estimate) or (torch_note if needs_torch else None)
        record = {"part": name, "status": note} if note else guarded(name, fn)
        records.append(emit({**record, "elapsed_seconds": round(budget.elapsed(), 1)}))

    part("attention_parity", lambda: attention_part(sizes), sizes.estimates["attention_parity"])
    part("train_step", lambda: train_bench.train_part(sizes, budget, torch_device, torch_note), 0)
    part("decode", lambda: decode_part(sizes, torch_device), sizes.estimates["decode"], needs_torch=True)
    statuses = {r["part"]: r["status"] for r in records}
    ok = not any(failed(s) for s in statuses.values())
    emit({"part": "summary", "device": jax.devices()[0].device_kind, "backend": backend, "quick": args.quick,
          "jax": jax.__version__, "torch": train_bench.torch_version(), "statuses": statuses, "ok": ok,
          "elapsed_seconds": round(budget.elapsed(), 1)})  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
