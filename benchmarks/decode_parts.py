"""Where orca_jax's batched decode spends its time on bench_small: the prefill alone (`generate` with
one new token runs no decode step), the whole call, the per-step time the two imply, `decode.prepare`,
and greedy's two-stage argmax against `jnp.argmax` over the same logits. Prints one JSON line per part.

    python benchmarks/decode_parts.py --batch_size 16

Calls take turns (prefill-only, then whole) for `--rounds` rounds after a warm-up; each figure is the
median round. The argmax figures are per call over [batch, 32000] float32 logits, compiled with the
decode's CPU options, median of 5 repeats of 200 calls.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from orca_jax.model import decode
from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder, init_params
from orca_jax.parallel import sharding

NEVER = -1  # an EOS id no model emits: every row decodes the full length


def seconds(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def per_call(fn, calls: int = 200) -> float:
    fn().block_until_ready()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn()
        out.block_until_ready()
        times.append((time.perf_counter() - start) / calls)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--prompt_tokens", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    cfg = ModelConfig(vocab_size=32000, d_model=512, num_layers=8, num_heads=8, mlp_dim=1376, dtype="float32")
    model = Decoder(cfg)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    params = sharding.strip_axis_names(jax.jit(lambda: init_params(model, jax.random.key(0)))())
    prompts = np.random.default_rng(0).integers(3, cfg.vocab_size, (args.batch_size, args.prompt_tokens)).tolist()
    b, n = args.batch_size, args.new_tokens
    common = {"benchmark": "decode_parts", "device": jax.devices()[0].device_kind, "batch_size": b,
              "prompt_tokens": args.prompt_tokens}  # fmt: skip

    with sharding.use_mesh(mesh):
        jax.block_until_ready(decode.prepare(model, params))  # compile
        prepare_seconds = seconds(lambda: decode.prepare(model, params))
        weights = decode.prepare(model, params)
        calls = {
            new: lambda new=new: decode.generate(model, weights, prompts, max_new_tokens=new, eos_id=NEVER, mesh=mesh)
            for new in (1, n)
        }
        for call in calls.values():
            call()  # compile
        times = {new: [] for new in calls}
        for _ in range(args.rounds):
            for new, call in calls.items():
                times[new].append(seconds(call))
    prefill, whole = float(np.median(times[1])), float(np.median(times[n]))
    print(json.dumps({**common, "part": "prepare", "seconds": round(prepare_seconds, 4)}))
    print(json.dumps({**common, "part": "prefill (generate, 1 new token)", "seconds": round(prefill, 4),
                      "seconds_per_round": [round(t, 4) for t in times[1]]}))  # fmt: skip
    print(json.dumps({**common, "part": f"generate, {n} new tokens", "seconds": round(whole, 4),
                      "seconds_per_round": [round(t, 4) for t in times[n]]}))  # fmt: skip
    print(json.dumps({**common, "part": "decode step (derived)", "seconds": round((whole - prefill) / (n - 1), 5)}))

    logits = jnp.asarray(np.random.default_rng(1).standard_normal((b, cfg.vocab_size)), jnp.float32)
    options = {"compiler_options": sharding.CPU_COMPILER_OPTIONS} if jax.devices()[0].platform == "cpu" else {}
    two_stage = jax.jit(decode.greedy, **options)
    plain = jax.jit(lambda x: jnp.argmax(x, axis=-1).astype(jnp.int32), **options)
    assert (np.asarray(two_stage(logits)) == np.asarray(plain(logits))).all()
    for name, fn in (("greedy, two-stage argmax", two_stage), ("jnp.argmax", plain)):
        print(json.dumps({**common, "part": name, "seconds": round(per_call(lambda fn=fn: fn(logits)), 6)}))


if __name__ == "__main__":
    main()
