"""The loss Orca trains on: cross-entropy on the teacher's response only.

A packed batch (data/packing.py) marks the response tokens and their EOS with
`decoder_loss_weights` = 1; system message, question and padding have weight 0. `token_losses`
returns sums, not means, so that microbatches, devices and held-out batches add up exactly before
one division by the summed weight.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]


def token_losses(model: nn.Module, params, batch: Batch) -> dict[str, jax.Array]:
    """Sums over the batch: weighted negative log-likelihood, weights, correct argmax predictions."""
    logits = model.apply(
        {"params": params},
        batch["decoder_input_tokens"],
        batch["decoder_positions"],
        batch["decoder_segment_ids"],
    )
    targets = batch["decoder_target_tokens"]
    weights = batch["decoder_loss_weights"].astype(jnp.float32)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - target_logits
    # A prediction is correct when no logit beats the target's. (That is the argmax but for exact
    # ties, which float logits all but never have; the argmax's index-tracking pass over the
    # [B, T, V] logits cost 6% of a CPU train step, BENCHMARKS.md, and the max fuses with logsumexp's.)
    correct = (target_logits >= jnp.max(logits, axis=-1)).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(nll * weights),
        "weight_sum": jnp.sum(weights),
        "correct_sum": jnp.sum(correct * weights),
    }
