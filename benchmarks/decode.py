"""Greedy decoding speed: orca_jax with its KV cache, orca_jax re-running the whole sequence for every
token (no cache), and transformers' `generate` (torch, CPU) on the same weights, in one run.

    python benchmarks/decode.py                      # bench_small: vocab 32000, d 512, MLP 1376, 8 layers
    python benchmarks/decode.py --batch_size 16 --no-no_cache_row

Prints one JSON line per implementation. Every implementation produces exactly `--new_tokens` tokens
per row (no early stop), after one warm-up call that compiles; tokens/s counts generated tokens.
The implementations take turns, one call each per round, for `--rounds` rounds, so that a slow spell
of the machine hits them alike; each row reports the median call and every call's seconds. orca_jax's
weights are rearranged for decoding once (`decode.prepare`, as the eval binary does per checkpoint),
outside the timed calls; its own time is reported as `prepare_seconds`.
Needs the `test` extra (torch, transformers) for the reference row.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from orca_jax.checkpoints import hf
from orca_jax.model.config import ModelConfig
from orca_jax.model.decode import generate, prepare
from orca_jax.model.llama import Decoder, init_params
from orca_jax.parallel import sharding

NEVER = -1  # an EOS id no model emits: every row decodes the full length


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--prompt_tokens", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--no_cache_row",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time decoding without a KV cache (slow at large batches)",
    )
    args = p.parse_args()
    cfg = ModelConfig(vocab_size=32000, d_model=512, num_layers=8, num_heads=8, mlp_dim=1376, dtype="float32")
    model = Decoder(cfg)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    params = sharding.strip_axis_names(jax.jit(lambda: init_params(model, jax.random.key(0)))())
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, cfg.vocab_size, (args.batch_size, args.prompt_tokens)).tolist()
    b, n, total = args.batch_size, args.new_tokens, args.prompt_tokens + args.new_tokens
    calls = {}  # name -> a call returning the generated tokens

    with sharding.use_mesh(mesh):
        jax.block_until_ready(prepare(model, params))  # compile
        prepare_seconds = seconds(lambda: jax.block_until_ready(prepare(model, params)))
        weights = prepare(model, params)
        calls["orca_jax_kv_cache"] = lambda: generate(
            model, weights, prompts, max_new_tokens=n, eos_id=NEVER, mesh=mesh
        )

        forward = jax.jit(
            lambda tokens: model.apply({"params": params}, tokens, jnp.arange(total)[None], (tokens != 0))
        )

        def no_cache():
            tokens = np.zeros((b, total), np.int32)
            tokens[:, : args.prompt_tokens] = prompts
            for i in range(args.prompt_tokens, total):
                logits = forward(jnp.asarray(tokens))
                tokens[:, i] = np.asarray(jnp.argmax(logits[:, i - 1], axis=-1))
            return tokens[:, args.prompt_tokens :].tolist()

        if args.no_cache_row:
            calls["orca_jax_no_cache"] = no_cache

    import torch
    import transformers

    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        k: v for k, v in hf.config_to_hf(cfg).items() if k not in ("architectures", "model_type", "torch_dtype")
    })).eval()  # fmt: skip
    state = {name: torch.from_numpy(np.array(t)) for name, t in hf.params_to_hf(jax.device_get(params), cfg)}
    reference.load_state_dict(state)
    input_ids = torch.tensor(prompts)

    def hf_generate():
        with torch.no_grad():
            out = reference.generate(input_ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return out[:, args.prompt_tokens :].tolist()

    calls["transformers_generate"] = hf_generate

    with sharding.use_mesh(mesh):
        tokens = {name: call() for name, call in calls.items()}  # compiles, warms up
        times = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                times[name].append(seconds(call))
    median = {name: float(np.median(t)) for name, t in times.items()}
    expected = tokens["transformers_generate"]
    for name in calls:
        extra = {"prepare_seconds": round(prepare_seconds, 3)} if name == "orca_jax_kv_cache" else {}
        print(json.dumps({
            "benchmark": "decode", "implementation": name, "device": jax.devices()[0].device_kind,
            "params": cfg.num_params(), "batch_size": b, "prompt_tokens": args.prompt_tokens, "new_tokens": n,
            "seconds": round(median[name], 3), "tokens_per_sec": round(b * n / median[name], 1),
            "seconds_per_round": [round(t, 3) for t in times[name]],
            "same_tokens_as_transformers": tokens[name] == expected,
            "ratio_vs_transformers": round(median["transformers_generate"] / median[name], 3), **extra,
        }))  # fmt: skip
    if tokens["orca_jax_kv_cache"] != expected:
        raise SystemExit("orca_jax's KV-cache decode and transformers disagree on the greedy tokens")


if __name__ == "__main__":
    main()
