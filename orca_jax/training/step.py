"""Train state and the sharded train step.

The step minimizes model/loss.py's response-only cross-entropy, averaged over the response tokens
of the global batch.
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
from orca_jax.model.loss import Batch, token_losses
from orca_jax.parallel import sharding


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array  # int32 scalar: optimizer updates applied so far
    params: Any
    opt_state: Any


def loss_sums_and_grads(model: nn.Module, params, batch: Batch, microbatches: int):
    """Summed losses and the gradient of the summed loss, over `microbatches` slices of the batch
    accumulated one after the other (the same numbers as one pass, in less activation memory)."""

    def loss_sum(params, batch):
        sums = token_losses(model, params, batch)
        return sums["loss_sum"], sums

    grad_fn = jax.value_and_grad(loss_sum, has_aux=True)
    if microbatches == 1:
        (_, sums), grads = grad_fn(params, batch)
        return sums, grads

    def split(x):  # microbatch m takes rows m, m + k, m + 2k, ...: every device keeps its own rows
        rows = x.shape[0]
        return x.reshape(rows // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)

    def accumulate(carry, microbatch):
        (_, sums), grads = grad_fn(params, microbatch)
        return jax.tree.map(jnp.add, carry, (sums, grads)), None

    zeros = (jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: token_losses(model, params, batch))),
             jax.tree.map(jnp.zeros_like, params))  # fmt: skip
    (sums, grads), _ = jax.lax.scan(accumulate, zeros, jax.tree.map(split, batch))
    return sums, grads


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation, schedule: optax.Schedule, microbatches: int = 1
) -> Callable:
    """One update on the mean loss over the batch's response tokens. A non-finite loss or gradient
    leaves parameters and optimizer state unchanged (`skipped` is 1 in the metrics)."""

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        sums, grads = loss_sums_and_grads(model, state.params, batch, microbatches)
        weight = jnp.maximum(sums["weight_sum"], 1.0)
        loss = sums["loss_sum"] / weight
        grads = jax.tree.map(lambda g: g / weight, grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        metrics = {
            "loss": loss,
            "accuracy": sums["correct_sum"] / weight,
            "grad_norm": grad_norm,
            "learning_rate": schedule(state.step),
            "skipped": 1.0 - finite.astype(jnp.float32),
            "loss_tokens": sums["weight_sum"],
            "real_tokens": jnp.sum(batch["decoder_segment_ids"] > 0).astype(jnp.float32),
            # Examples packed into the batch: each starts at position 0 of a real segment.
            "examples": jnp.sum((batch["decoder_positions"] == 0) & (batch["decoder_segment_ids"] > 0)).astype(
                jnp.float32
            ),
        }
        new_state = TrainState(step=state.step + 1, params=keep(params, state.params),
                               opt_state=keep(opt_state, state.opt_state))  # fmt: skip
        return new_state, metrics

    return train_step


def abstract_state(model: nn.Module, tx: optax.GradientTransformation) -> TrainState:
    """Shapes and logical axis names of the train state (Adam moments inherit the names)."""

    def init(rng):
        params = init_params(model, rng)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    state = jax.eval_shape(init, jax.random.key(0))
    # Optimizer statistics shaped unlike their parameter (Adafactor's factored rows and columns)
    # inherit its axis names, which no longer fit: they are small, so they are replicated.
    opt_state = jax.tree.map(
        lambda x: x.value if isinstance(x, nn.Partitioned) and x.value.ndim != len(x.names) else x,
        state.opt_state,
        is_leaf=lambda x: isinstance(x, nn.Partitioned),
    )
    return state.replace(opt_state=opt_state)


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


def jit_train_step(
    model: nn.Module, tx, schedule, shardings: TrainState, mesh: Mesh, microbatches: int = 1
) -> Callable:
    """The train step compiled with explicit shardings; the old state's buffers are donated. On CPU
    devices with sharding.CPU_COMPILER_OPTIONS (the mesh's devices decide: a step compiled on this host for a
    TPU topology gets the TPU compiler's defaults)."""
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    return jax.jit(
        make_train_step(model, tx, schedule, microbatches),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
        compiler_options=sharding.CPU_COMPILER_OPTIONS if on_cpu else None,
    )
