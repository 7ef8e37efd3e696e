"""orca_jax: explanation tuning (Microsoft's Orca) in JAX, from a CPU laptop to a TPU pod."""

__version__ = "0.1.0"


def load(path: str, **kwargs):
    """An orca_jax run or export, or a Hugging Face folder, as a model with `.logits` and
    `.generate`; see `orca_jax.api`."""
    from orca_jax.api import load as _load

    return _load(path, **kwargs)
