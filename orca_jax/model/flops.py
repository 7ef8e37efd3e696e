"""Model FLOPs per token; MFU divides them by a chip's peak (parallel/topology.py).

FLOPs per token, forward and backward (nanoGPT's and PaLM's accounting; a multiply-add is 2 FLOPs):

    6 * N                  N: parameters that multiply activations (every weight matrix and the LM
                           head; the input embedding is a lookup and costs nothing)
  + 12 * L * T * H * E     attention scores and their weighted sum, forward and backward, over the
                           full T x T square a dense kernel computes (L layers, H query heads of E)

Remat recomputation is not counted: MFU measures useful work. Per step the FLOPs are this times the
row slots (batch x T), padding included, as Orca's own MFU figure counts it.
"""

from __future__ import annotations

from orca_jax.model.config import ModelConfig


def flops_per_token(cfg: ModelConfig, sequence_length: int) -> float:
    embedding = cfg.padded_vocab_size * cfg.d_model
    matmul_params = cfg.num_params() - embedding * (1 if cfg.tie_embeddings else 2) + embedding
    attention = 12 * cfg.num_layers * sequence_length * cfg.num_heads * cfg.head_size
    return 6 * matmul_params + attention
