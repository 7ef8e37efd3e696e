"""Train state, the response-only loss, and the sharded train and eval steps.

The loss is token-level cross-entropy on the positions whose `decoder_loss_weights` is 1 (the
teacher's response and its EOS), averaged over those positions in the global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from orca_jax.model.llama import init_params
from orca_jax.parallel import sharding

Batch = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array  # int32 scalar: optimizer updates applied so far
    params: Any
    opt_state: Any


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
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(nll * weights),
        "weight_sum": jnp.sum(weights),
        "correct_sum": jnp.sum(correct * weights),
    }


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule) -> Callable:
    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        def loss_fn(params):
            sums = token_losses(model, params, batch)
            return sums["loss_sum"] / jnp.maximum(sums["weight_sum"], 1.0), sums

        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": sums["correct_sum"] / jnp.maximum(sums["weight_sum"], 1.0),
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state.step),
            "loss_tokens": sums["weight_sum"],
            "real_tokens": jnp.sum(batch["decoder_segment_ids"] > 0).astype(jnp.float32),
            # Records the input pipeline dropped (per reason) while building this batch.
            "rejected": jnp.sum(batch["rejected"], axis=0) if "rejected" in batch else jnp.zeros((0,), jnp.int32),
        }
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def abstract_state(model: nn.Module, tx: optax.GradientTransformation) -> TrainState:
    """Shapes and logical axis names of the train state (Adam moments inherit the names)."""

    def init(rng):
        params = init_params(model, rng)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return jax.eval_shape(init, jax.random.key(0))


def init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int, shardings: TrainState) -> TrainState:
    """A freshly initialized state, created directly in its sharded layout."""

    def init(rng):
        params = sharding.strip_axis_names(init_params(model, rng))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def state_from_params(tx: optax.GradientTransformation, params, shardings: TrainState, param_dtype) -> TrainState:
    """A step-0 state around given parameters (fine-tuning), cast to the master-weight dtype."""

    def init(params):
        params = jax.tree.map(lambda x: x.astype(param_dtype), params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return jax.jit(init, out_shardings=shardings)(params)


def jit_train_step(model: nn.Module, tx, schedule, shardings: TrainState, mesh: Mesh) -> Callable:
    """The train step compiled with explicit shardings; the old state's buffers are donated."""
    return jax.jit(
        make_train_step(model, tx, schedule),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )


def jit_eval_step(model: nn.Module, param_shardings, mesh: Mesh) -> Callable:
    return jax.jit(
        lambda params, batch: token_losses(model, params, batch),
        in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
        out_shardings=sharding.replicated(mesh),
    )
