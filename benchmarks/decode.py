"""Greedy decoding speed: orca_jax with its KV cache, orca_jax re-running the whole sequence for every
token (no cache), and transformers' `generate` (torch, CPU) on the same weights, in one run.

    python benchmarks/decode.py                      # bench_small: vocab 32000, d 512, MLP 1376, 8 layers
    python benchmarks/decode.py --batch_size 16 --no-no_cache_row

Prints one JSON line per implementation. Every implementation produces exactly `--new_tokens` tokens
per row (no early stop), after one warm-up call that compiles; tokens/s counts generated tokens.
Needs the `test` extra (torch, transformers) for the reference row.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from orca_jax.model import hf
from orca_jax.model.config import ModelConfig
from orca_jax.model.decode import generate
from orca_jax.model.llama import Decoder, init_params
from orca_jax.parallel import sharding

NEVER = -1  # an EOS id no model emits: every row decodes the full length


def timed(fn, repeats: int) -> float:
    fn()  # compile / warm up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--prompt_tokens", type=int, default=64)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
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
    results = {}

    with sharding.use_mesh(mesh):
        cached = lambda: generate(model, params, prompts, max_new_tokens=n, eos_id=NEVER, mesh=mesh)  # noqa: E731
        results["orca_jax_kv_cache"] = (timed(cached, args.repeats), cached())

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
            results["orca_jax_no_cache"] = (timed(no_cache, args.repeats), no_cache())

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

    results["transformers_generate"] = (timed(hf_generate, args.repeats), hf_generate())

    same = results["orca_jax_kv_cache"][1] == results["transformers_generate"][1]
    for name, (seconds, _) in results.items():
        print(json.dumps({
            "benchmark": "decode", "implementation": name, "device": jax.devices()[0].device_kind,
            "params": cfg.num_params(), "batch_size": b, "prompt_tokens": args.prompt_tokens, "new_tokens": n,
            "seconds": round(seconds, 3), "tokens_per_sec": round(b * n / seconds, 1),
            "same_tokens_as_transformers": results[name][1] == results["transformers_generate"][1],
            "ratio_vs_transformers": round(results["transformers_generate"][0] / seconds, 3),
        }))  # fmt: skip
    if not same:
        raise SystemExit("orca_jax's KV-cache decode and transformers disagree on the greedy tokens")


if __name__ == "__main__":
    main()
