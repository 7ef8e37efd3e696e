"""orca_jax: explanation tuning (Microsoft's Orca) in JAX, from a CPU laptop to a TPU pod."""

__version__ = "0.1.0"
