"""Loss and token accuracy on held-out records: the trainer's periodic validation and orca-eval's
`heldout` metrics are this one loop.

Sums come back from every batch and are divided once at the end, so the figure is the mean over
all response tokens of the split, whatever the batch size or number of hosts.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
from jax.sharding import Mesh

from orca_jax.data.config import DataConfig
from orca_jax.data.pipeline import host_batches
from orca_jax.model.loss import token_losses
from orca_jax.parallel import sharding


def jit_loss_step(model: nn.Module, param_shardings, mesh: Mesh) -> Callable:
    """(params, global batch) -> token_losses' sums, replicated."""
    return jax.jit(
        lambda params, batch: token_losses(model, params, batch),
        in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
        out_shardings=sharding.replicated(mesh),
    )


def response_loss(
    loss_step: Callable, params, mesh: Mesh, data: DataConfig, rows_per_host: int, max_batches: int = 0
) -> dict[str, float]:
    """Mean loss and argmax accuracy over the response tokens of `data`'s validation split (its
    first `max_batches` batches when that is not 0), and how many response tokens that was."""
    totals = {"loss_sum": 0.0, "weight_sum": 0.0, "correct_sum": 0.0}
    batches = host_batches(data, "validation", rows_per_host, shuffle=False, seed=None, num_epochs=1,
                           shard_index=jax.process_index(), num_shards=jax.process_count())  # fmt: skip
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        batch.pop("rejected", None)  # a host-side count, reported by the caller's data check
        sums = jax.device_get(loss_step(params, sharding.global_batch(batch, mesh)))
        totals = {k: totals[k] + float(sums[k]) for k in totals}
    weight = max(totals["weight_sum"], 1.0)
    return {
        "loss": totals["loss_sum"] / weight,
        "token_accuracy": totals["correct_sum"] / weight,
        "response_tokens": totals["weight_sum"],
    }
