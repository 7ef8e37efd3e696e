"""Model FLOPs per token, peak FLOP/s per chip, and the MFU they imply.

FLOPs per token, forward and backward (nanoGPT's and PaLM's accounting; a multiply-add is 2 FLOPs):

    6 * N                  N: parameters that multiply activations (every weight matrix and the LM
                           head; the input embedding is a lookup and costs nothing)
  + 12 * L * T * H * E     attention scores and their weighted sum, forward and backward, over the
                           full T x T square a dense kernel computes (L layers, H query heads of E)

Remat recomputation is not counted: MFU measures useful work. Per step the FLOPs are this times the
row slots (batch x T), padding included, as Orca's own MFU figure counts it.
"""

from __future__ import annotations

import jax

from orca_jax.model.config import ModelConfig

# Dense bf16 peak FLOP/s per chip (per device JAX sees).
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
}


def flops_per_token(cfg: ModelConfig, sequence_length: int) -> float:
    embedding = cfg.padded_vocab_size * cfg.d_model
    matmul_params = cfg.num_params() - embedding * (1 if cfg.tie_embeddings else 2) + embedding
    attention = 12 * cfg.num_layers * sequence_length * cfg.num_heads * cfg.head_size
    return 6 * matmul_params + attention


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """The table's peak for this device kind (longest matching name), or None (e.g. a CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    matches = [name for name in PEAK_FLOPS if name in kind]
    return PEAK_FLOPS[max(matches, key=len)] if matches else None
