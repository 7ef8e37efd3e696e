"""Asking the model: batched greedy generation with the KV cache, and ranking options by likelihood.

Both run on the mesh the checkpoint was loaded on (batch rows split over data and fsdp), on every
host; every host holds all prompts and gets all results back, and only the first host prints.

Prompts are the chat template's, with the evaluation's system message (Orca: empty) and the
example's reply prefix, BOS first:

    [BOS] "### System:\\n\\n\\n### User:\\n<input>\\n\\n### Response:\\n<reply prefix>"

Generation sorts prompts by length before batching, so each batch pads little, and cuts each
generation at its first stop string (the template's next-turn marker, by default).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import seqio
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from orca_jax.console import format_duration
from orca_jax.data.templates import ChatTemplate
from orca_jax.evaluation import answers
from orca_jax.evaluation.suites import Example
from orca_jax.model.decode import generate, prepare
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding


class Progress:
    """A progress line with rate and ETA on stderr (first host only): in place on a terminal, else
    one line per update."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done = label, total, 0
        self.start = time.time()
        self.show = jax.process_index() == 0
        self.tty = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if not self.show:
            return
        elapsed = time.time() - self.start
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / max(rate, 1e-9)
        line = f"{self.label} {self.done}/{self.total} | {rate:.2f} ex/s | ETA {format_duration(eta)}"
        end = "\r" if self.tty and self.done < self.total else "\n"
        print(line, end=end, file=sys.stderr, flush=True)


def prompt_tokens(vocab: seqio.Vocabulary, template: ChatTemplate, system_message: str, ex: Example) -> list[int]:
    return [vocab.bos_id, *vocab.encode(template.prompt(system_message, ex.input) + ex.reply_prefix)]


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop_strings if s and s in text]
    return text[: min(cuts)] if cuts else text


def generate_answers(
    model: Decoder,
    params,
    mesh: Mesh,
    vocab: seqio.Vocabulary,
    template: ChatTemplate,
    examples: Sequence[Example],
    *,
    system_message: str,
    batch_size: int,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[dict]:
    """One inference row per example, in the examples' order: task, input, target, generation,
    answer (None when unparsed), correct, and the options {letter: text} when there are any."""
    prompts = [prompt_tokens(vocab, template, system_message, ex) for ex in examples]
    order = sorted(range(len(examples)), key=lambda i: len(prompts[i]))
    generations: dict[int, str] = {}
    weights = prepare(model, params)  # once for all batches
    progress = Progress("generating", len(examples))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        outputs = generate(
            model, weights, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens, eos_id=vocab.eos_id,
            mesh=mesh, temperature=temperature, top_p=top_p, seed=seed + start,
        )  # fmt: skip
        for i, out in zip(chunk, outputs, strict=True):
            generations[i] = cut_at_stop(vocab.decode([t for t in out if t != vocab.eos_id]), stop_strings)
        progress.update(len(chunk))
    rows = []
    for i, ex in enumerate(examples):
        answer = answers.extract(generations[i], ex.form, dict(ex.options))
        row = {"task": ex.task, "input": ex.input, "target": ex.target, "generation": generations[i],
               "answer": answer, "correct": answers.is_correct(answer, ex.target, ex.form)}  # fmt: skip
        if ex.options:  # so that `orca-eval rescore` reads the generation against the same options
            row["options"] = dict(ex.options)
        rows.append(row)
    return rows


@partial(jax.jit, static_argnames=("model",))
def _continuation_logprobs(model: Decoder, params, tokens: jax.Array, weights: jax.Array):
    """tokens [B, T + 1] right-padded with 0; weights mark the scored tokens. Each row's summed
    log-probability of its scored tokens, and whether each of them is the model's argmax."""
    inputs, targets, scored = tokens[:, :-1], tokens[:, 1:], weights[:, 1:] > 0
    segments = (inputs != 0).astype(jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape)
    logits = model.apply({"params": params}, inputs, positions, segments)
    token_logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
    greedy = jnp.argmax(logits, axis=-1) == targets
    return jnp.sum(jnp.where(scored, token_logp, 0.0), axis=1), jnp.all(greedy | ~scored, axis=1)


def score_continuations(
    model: Decoder, params, mesh: Mesh, rows: Sequence[tuple[Sequence[int], int]], batch_size: int,
    on_batch: Callable[[int], None] = lambda n: None, pad_to: int = 64,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """rows: (tokens, n). The summed log-probability of each row's last n tokens, and whether each of
    them is the model's greedy choice, in the rows' order. Rows go longest first in batches of one
    size (a multiple of the batch shards), inputs padded to a multiple of `pad_to`: few shapes
    compile, and batches pad little. `on_batch(rows done)` follows progress."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    shards = sharding.batch_shards(mesh)
    n = -(-batch_size // shards) * shards
    logps, greedy = np.zeros(len(rows)), np.zeros(len(rows), bool)
    for start in range(0, len(order), n):
        chunk = order[start : start + n]
        width = -(-(len(rows[chunk[0]][0]) - 1) // pad_to) * pad_to + 1
        tokens, weights = np.zeros((n, width), np.int32), np.zeros((n, width), np.int32)
        for j, i in enumerate(chunk):
            toks, scored = rows[i]
            tokens[j, : len(toks)] = toks
            weights[j, len(toks) - scored : len(toks)] = 1
        logp, best = _continuation_logprobs(model, params, _on_mesh(tokens, mesh), _on_mesh(weights, mesh))
        logps[chunk] = np.asarray(multihost_utils.process_allgather(logp, tiled=True))[: len(chunk)]
        greedy[chunk] = np.asarray(multihost_utils.process_allgather(best, tiled=True))[: len(chunk)]
        on_batch(len(chunk))
    return logps, greedy


def _on_mesh(host_array: np.ndarray, mesh: Mesh) -> jax.Array:
    """A global array split over the batch shards; every host holds all of `host_array`."""
    return jax.make_array_from_callback(host_array.shape, sharding.batch_sharding(mesh), lambda i: host_array[i])


def option_text(ex: Example, letter: str, body: str) -> str:
    """An option as the reply would state it: "(B) Tuesday" (after AGIEval's prefix: " (B) Tuesday")."""
    return f"{' ' if ex.reply_prefix else ''}({letter}) {body}"


def rank_options(
    model: Decoder,
    params,
    mesh: Mesh,
    vocab: seqio.Vocabulary,
    template: ChatTemplate,
    examples: Sequence[Example],
    *,
    system_message: str,
    batch_size: int,
    length_normalized: bool = False,
) -> list[str | None]:
    """For each multiple-choice example, the letter of the option the model finds most likely as
    the reply (summed log-probability, or per token when `length_normalized`); None without options.
    The prompt and the option are tokenized apart, so the option's tokens are exactly its own."""
    rows: list[tuple[int, str, list[int], int]] = []  # example, letter, tokens, continuation length
    for i, ex in enumerate(examples):
        prompt = prompt_tokens(vocab, template, system_message, ex)
        for letter, body in ex.options:
            # A model's own template may open the reply with text the model writes (Llama-2's space).
            continuation = vocab.encode(template.response_prefix + option_text(ex, letter, body))
            rows.append((i, letter, prompt + list(continuation), len(continuation)))
    progress = Progress("ranking options", len(rows))
    logp, _ = score_continuations(model, params, mesh, [(toks, cont) for _, _, toks, cont in rows], batch_size,
                                  progress.update)  # fmt: skip
    scores = logp / np.maximum([cont for *_, cont in rows], 1) if length_normalized else logp
    best: list[str | None] = [None] * len(examples)
    best_score = [-np.inf] * len(examples)
    for (i, letter, _, _), score in zip(rows, scores, strict=True):
        if score > best_score[i]:
            best[i], best_score[i] = letter, score
    return best
