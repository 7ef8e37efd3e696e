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

The building blocks (`build`, `orca_jax_call`, `transformers_reference`, `transformers_call`,
`take_turns`) are also what benchmarks/accelerator_check.py times on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from orca_jax.checkpoints import hf
from orca_jax.model.config import ModelConfig
from orca_jax.model.decode import generate, prepare
from orca_jax.model.llama import Decoder, init_params
from orca_jax.parallel import sharding

NEVER = -1  # an EOS id no model emits: every row decodes the full length
BENCH_SMALL = ModelConfig(vocab_size=32000, d_model=512, num_layers=8, num_heads=8, mlp_dim=1376, dtype="float32")
Tokens = list[list[int]]


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build(cfg: ModelConfig, device: jax.Device | None = None) -> tuple[Decoder, Mesh, dict]:
    """The model, a one-device mesh, and random parameters (seed 0) without their axis names."""
    model = Decoder(cfg)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), [device or jax.devices()[0]])
    params = sharding.strip_axis_names(jax.jit(lambda: init_params(model, jax.random.key(0)))())
    return model, mesh, params


def random_prompts(cfg: ModelConfig, batch_size: int, prompt_tokens: int) -> Tokens:
    return np.random.default_rng(0).integers(3, cfg.vocab_size, (batch_size, prompt_tokens)).tolist()


def orca_jax_call(model: Decoder, params, mesh: Mesh, prompts: Tokens, new_tokens: int
                  ) -> tuple[Callable[[], Tokens], float]:  # fmt: skip
    """A call of orca_jax's KV-cache `generate` on prepared weights, and `prepare`'s own seconds
    (compiled first, then timed once). Run the call under `sharding.use_mesh(mesh)`."""
    with sharding.use_mesh(mesh):
        jax.block_until_ready(prepare(model, params))  # compile
        prepare_seconds = seconds(lambda: jax.block_until_ready(prepare(model, params)))
        weights = prepare(model, params)
    call = lambda: generate(model, weights, prompts, max_new_tokens=new_tokens, eos_id=NEVER, mesh=mesh)  # noqa: E731
    return call, prepare_seconds


def transformers_reference(cfg: ModelConfig, params, device: str = "cpu"):
    """transformers' LlamaForCausalLM holding orca_jax's `params` (exported through checkpoints.hf),
    in float32, in eval mode on the torch `device`."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = hf.config_to_hf(cfg, bos_id=1, eos_id=2)
    # No EOS: with one, `generate`'s min_new_tokens would mask its logit at every step, and the greedy
    # tokens would differ from orca_jax's (which may emit it: NEVER stops no row) wherever it wins.
    config["eos_token_id"] = None
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
        k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")
    })).eval()  # fmt: skip
    state = {name: torch.from_numpy(np.array(t)) for name, t in hf.params_to_hf(jax.device_get(params), cfg)}
    reference.load_state_dict(state)
    return reference.to(device)


def transformers_call(reference, prompts: Tokens, new_tokens: int) -> Callable[[], Tokens]:
    """A call of `reference.generate`: greedy, exactly `new_tokens` per row, on the model's device."""
    import torch

    input_ids = torch.tensor(prompts, device=reference.device)
    prompt_tokens = input_ids.shape[1]

    def call() -> Tokens:
        with torch.no_grad():
            out = reference.generate(
                input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
            )
        return out[:, prompt_tokens:].tolist()  # .tolist() waits for the device

    return call


def take_turns(calls: dict[str, Callable[[], Tokens]], rounds: int, mesh: Mesh
               ) -> tuple[dict[str, Tokens], dict[str, list[float]]]:  # fmt: skip
    """One warm-up call each (it compiles; its tokens are returned), then `rounds` rounds of one
    timed call each, in turn: every call's seconds, by name."""
    with sharding.use_mesh(mesh):
        tokens = {name: call() for name, call in calls.items()}
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                times[name].append(seconds(call))
    return tokens, times


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
    cfg = BENCH_SMALL
    model, mesh, params = build(cfg)
    prompts = random_prompts(cfg, args.batch_size, args.prompt_tokens)
    b, n, total = args.batch_size, args.new_tokens, args.prompt_tokens + args.new_tokens
    calls = {}  # name -> a call returning the generated tokens
    calls["orca_jax_kv_cache"], prepare_seconds = orca_jax_call(model, params, mesh, prompts, n)

    with sharding.use_mesh(mesh):
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
    calls["transformers_generate"] = transformers_call(transformers_reference(cfg, params), prompts, n)

    tokens, times = take_turns(calls, args.rounds, mesh)
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
