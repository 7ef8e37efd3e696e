"""AdamW (or Adafactor) with linear warmup then cosine or linear decay, global-norm clipping, and no
weight decay on norms (the model has no biases)."""

from __future__ import annotations

import dataclasses

import jax
import optax

from orca_jax.errors import ConfigError

DECAYS = ("cosine", "linear", "constant")


OPTIMIZERS = ("adamw", "adafactor")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"  # adamw | adafactor (factored second moments: less optimizer memory)
    learning_rate: float = 1e-4  # peak, reached at the end of warmup
    warmup_steps: int = 100
    decay: str = "cosine"  # cosine | linear | constant, from the peak down to final_lr_fraction * peak
    final_lr_fraction: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0  # 0 disables clipping

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"OptimizerConfig.name: {self.name!r} is not one of {OPTIMIZERS}")
        if self.decay not in DECAYS:
            raise ConfigError(f"OptimizerConfig.decay: {self.decay!r} is not one of {DECAYS}")


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    peak, final = config.learning_rate, config.learning_rate * config.final_lr_fraction
    warmup = min(config.warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    if config.decay == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.final_lr_fraction)
    elif config.decay == "linear":
        after = optax.linear_schedule(peak, final, decay_steps)
    else:
        after = optax.constant_schedule(peak)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params):
    """True for weight matrices; norms' scales are never decayed."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any("norm" in str(getattr(k, "key", "")) for k in path), params
    )


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(config, total_steps)
    if config.name == "adafactor":
        update = optax.adafactor(
            schedule, decay_rate=config.b2, eps=config.eps, multiply_by_parameter_scale=False,
            weight_decay_rate=config.weight_decay or None, weight_decay_mask=decay_mask,
        )  # fmt: skip
    else:
        update = optax.adamw(
            schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask
        )
    # Always a chain, so that the optimizer state has the same structure with or without clipping.
    clip = optax.clip_by_global_norm(config.grad_clip_norm) if config.grad_clip_norm > 0 else optax.identity()
    return optax.chain(clip, update)
