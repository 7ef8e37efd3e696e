"""lm-evaluation-harness (lm-eval 0.4.13) adapter: an orca_jax model as lm-eval's model "orca_jax".

    pip install -e ".[lm_eval]"
    orca-lm-eval --model orca_jax --model_args path=/runs/mini,dtype=float32 --tasks arc_challenge --batch_size 16

`orca-lm-eval` (orca_jax/cli/lm_harness.py) is lm-eval's own command line after importing this
module. Plain `lm_eval --model orca_jax` does not work: lm-eval 0.4.13 knows only the
models in its own table (lm_eval.models.MODEL_MAPPING) and those registered by modules already
imported, and reads no plugin entry points. From Python, importing this module registers the model:

    import lm_eval
    import orca_jax.evaluation.lm_harness  # noqa: F401  (registers "orca_jax")
    results = lm_eval.simple_evaluate(model="orca_jax", model_args="path=/runs/mini", tasks=["hellaswag"])

model_args: path (an orca_jax run, export or import, or a Hugging Face LLaMA / Mistral folder), step,
batch_size, max_length (default: the run's sequence length, an HF config's max_position_embeddings, else
2048), max_gen_toks (256), dtype (compute dtype, e.g. float32), data / fsdp / tensor (mesh sizes), seed.

Text is tokenized as lm-eval's HF model tokenizes it for a LLaMA tokenizer, which adds BOS: a
request is BOS + context + continuation, encoded whole and split where the context's own encoding
ends; an empty context is BOS alone. Scoring runs orca_jax's jitted forward on the mesh (rows split
over the batch shards, lengths padded to multiples of 64 so few shapes compile); generation is
orca_jax's KV-cache decoding, cut at the request's `until` strings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import jax

from orca_jax.checkpoints import bundle
from orca_jax.errors import ConfigError
from orca_jax.evaluation.responses import cut_at_stop, score_continuations
from orca_jax.model.decode import generate, prepare
from orca_jax.parallel import sharding

try:
    import lm_eval.models  # noqa: F401  (lm-eval's own models first: it fills an empty registry only)
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import model_registry
    from lm_eval.models.utils import normalize_gen_kwargs
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    from tqdm import tqdm  # lm-eval's own progress bars (a dependency of it)
except ImportError as e:  # lm-eval is an optional extra; nothing else in orca_jax imports it
    raise ImportError(f'orca_jax.evaluation.lm_harness needs lm-eval: pip install -e ".[lm_eval]" ({e})') from e

log = logging.getLogger(__name__)
KNOWN_ARGS = "path, step, batch_size, max_length, max_gen_toks, dtype, data, fsdp, tensor, seed"


def _whole(name: str, value, minimum: int) -> int:
    """A model_arg that must be a whole number (lm-eval hands over what the user typed)."""
    if str(value).strip().removeprefix("-").isdigit() and int(value) >= minimum:
        return int(value)
    raise ConfigError(f"orca_jax model_args: {name} must be a whole number >= {minimum}, got {value!r}")


class OrcaJaxLM(TemplateLM):
    """lm-eval's LM interface on an orca_jax bundle; see the module docstring for model_args."""

    def __init__(
        self,
        path: str = "",
        step: int | None = None,
        batch_size: int | str = 16,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        dtype: str = "",
        data: int = 1,
        fsdp: int = -1,
        tensor: int = 1,
        seed: int = 0,
        device: str | None = None,  # lm-eval passes its torch device (default cuda:0); JAX places on the mesh
        max_batch_size: int | None = None,  # lm-eval passes it for batch_size=auto, which picks our default
        **unknown,
    ):
        super().__init__()
        if unknown:
            raise ConfigError(
                f"orca_jax model_args: unknown argument(s) {', '.join(sorted(unknown))}; known: {KNOWN_ARGS}"
            )
        if not path:
            raise ConfigError("orca_jax model_args: path is required (an orca_jax run or export, or an HF folder)")
        # lm-eval's CLI passes batch_size as given ("16", "auto", "auto:4"); auto has no meaning here.
        self.batch_size = 16 if str(batch_size).startswith("auto") else _whole("batch_size", batch_size, 1)
        step = None if step is None else _whole("step", step, 0)
        max_length = None if max_length is None else _whole("max_length", max_length, 2)
        self.max_gen_toks, self.seed = _whole("max_gen_toks", max_gen_toks, 1), _whole("seed", seed, 0)
        mesh = {name: _whole(name, size, -1) for name, size in (("data", data), ("fsdp", fsdp), ("tensor", tensor))}
        self.mesh = sharding.make_mesh(sharding.MeshConfig(**mesh))
        with sharding.use_mesh(self.mesh):
            self.bundle = bundle.load(str(path), self.mesh, step=step, compute_dtype=dtype or "")
        self.model = self.bundle.model
        self.vocab = self.bundle.vocabulary()
        self._max_length = max_length or self._default_max_length(str(path))
        self._decode_weights = None  # prepared on the first generation: it copies every weight

    def _default_max_length(self, path: str) -> int:
        if bundle.is_hf_folder(path):
            return int(bundle.read_hf_config(path).get("max_position_embeddings") or 2048)
        return int((self.bundle.meta.get("data") or {}).get("sequence_length") or 2048)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def eot_token_id(self) -> int:
        return self.vocab.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.vocab.bos_id  # an empty context, and the rolling windows' first token, is BOS (as HF's LLaMA)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        ids = [int(t) for t in self.vocab.encode(string)]
        return ids if add_special_tokens is False else [self.vocab.bos_id, *ids]

    def tok_decode(self, tokens: Sequence[int], **kwargs) -> str:
        return self.vocab.decode([int(t) for t in tokens if t != self.vocab.eos_id])

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(sum of log-probabilities, is_greedy) of each continuation after its context, both token lists.
        As lm-eval's HF model: a request longer than max_length + 1 tokens loses its context's start."""
        rows = []
        for _, context, continuation in requests:
            tokens = (list(context) + list(continuation))[-(self.max_length + 1) :]
            rows.append((tokens, min(len(continuation), len(tokens) - 1)))
        return self._score_rows(rows, "loglikelihood", disable_tqdm)

    def _score_rows(self, rows: list[tuple[list[int], int]], label: str, quiet: bool) -> list[tuple[float, bool]]:
        """rows: (tokens, n): the last n tokens of each scored (responses.score_continuations)."""
        progress = tqdm(total=len(rows), desc=label, disable=quiet or jax.process_index() != 0)
        with sharding.use_mesh(self.mesh):
            logp, greedy = score_continuations(self.model, self.bundle.params, self.mesh, rows, self.batch_size,
                                               progress.update)  # fmt: skip
        progress.close()
        return [(float(x), bool(g)) for x, g in zip(logp, greedy, strict=True)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each text's log-probability after BOS, in lm-eval's rolling windows of max_length tokens,
        each token predicted once (disjoint windows, as lm-eval's HF model scores them)."""
        rows, owner = [], []
        for r, request in enumerate(requests):
            (text,) = request.args
            windows = get_rolling_token_windows(
                self.tok_encode(text, add_special_tokens=False), self.prefix_token_id, self.max_length, 1
            )
            for context, predicted in map(make_disjoint_window, windows):
                rows.append((context + predicted, len(predicted)))
                owner.append(r)
        totals = [0.0] * len(requests)
        for r, (logp, _) in zip(owner, self._score_rows(rows, "rolling loglikelihood", disable_tqdm), strict=True):
            totals[r] += logp
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """KV-cache generations, cut at the first of the request's `until` strings. Requests with the
        same generation kwargs run together (max_gen_toks and sampling are compile-time constants)."""
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        if self._decode_weights is None:
            with sharding.use_mesh(self.mesh):
                self._decode_weights = prepare(self.model, self.bundle.params)
        results: list[str] = [""] * len(requests)
        progress = tqdm(total=len(requests), desc="generating", disable=disable_tqdm or jax.process_index() != 0)
        for indices in groups.values():
            until, max_new, temperature, top_p = self._generation_settings(requests[indices[0]].args[1])
            # As lm-eval's HF model: a long context keeps its end, leaving room for max_gen_toks.
            prompts = {i: self.tok_encode(requests[i].args[0])[-(self.max_length - max_new) :] for i in indices}
            order = sorted(indices, key=lambda i: len(prompts[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                with sharding.use_mesh(self.mesh):
                    outputs = generate(
                        self.model, self._decode_weights, [prompts[i] for i in chunk], max_new_tokens=max_new,
                        eos_id=self.vocab.eos_id, mesh=self.mesh, temperature=temperature, top_p=top_p,
                        seed=self.seed + start,
                    )  # fmt: skip
                for i, out in zip(chunk, outputs, strict=True):
                    results[i] = cut_at_stop(self.tok_decode(out), until)
                progress.update(len(chunk))
        progress.close()
        return results

    def _generation_settings(self, gen_kwargs: dict) -> tuple[list[str], int, float, float]:
        """until, max_new_tokens, temperature (0: greedy) and top_p of a request, read by lm-eval's
        own rules (normalize_gen_kwargs: greedy unless do_sample, or a temperature without it)."""
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
        until, max_new = list(kwargs.pop("until")), int(kwargs.pop("max_gen_toks"))
        temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample") else 0.0
        top_p = float(kwargs.pop("top_p", 1.0))
        if kwargs:  # e.g. top_k: orca_jax samples with a temperature and top_p only
            log.warning("orca_jax: ignoring generation kwargs %s", sorted(kwargs))
        if max_new >= self.max_length:
            raise ConfigError(
                f"orca_jax: max_gen_toks {max_new} leaves no room for a prompt in max_length {self.max_length}"
            )
        return until, max_new, temperature, top_p


# Registered once, however often the module is imported.
if "orca_jax" not in model_registry:
    model_registry.register("orca_jax")(OrcaJaxLM)
