"""The train step's compiled CPU program: what made it slow must not come back (BENCHMARKS.md).

Each test reads the optimized HLO of the step orca-train compiles, at a tiny shape whose sizes are all
distinct, so that an array's shape says which activation it is.
"""

import re

import jax
import numpy as np

from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder
from orca_jax.parallel import sharding
from orca_jax.training import step as step_lib
from orca_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer

ROWS, LENGTH = 2, 24  # 48 tokens
CFG = ModelConfig(vocab_size=256, d_model=32, num_layers=2, num_heads=2, mlp_dim=40, dtype="float32")


def compiled_step_text(cfg: ModelConfig = CFG) -> str:
    model = Decoder(cfg)
    opt = OptimizerConfig()
    tx, schedule = make_optimizer(opt, 10), learning_rate_schedule(opt, 10)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    with sharding.use_mesh(mesh):
        shardings = sharding.shardings_of(step_lib.abstract_state(model, tx), mesh)
        state = jax.tree.map(
            lambda leaf, spec: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=spec),
            sharding.strip_axis_names(step_lib.abstract_state(model, tx)),
            shardings,
        )
        batch = {
            name: jax.ShapeDtypeStruct((ROWS, LENGTH), np.int32, sharding=sharding.batch_sharding(mesh))
            for name in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
                         "decoder_segment_ids", "decoder_positions")
        }  # fmt: skip
        step = step_lib.jit_train_step(model, tx, schedule, shardings, mesh)
        return step.lower(state, batch).compile().as_text()


def result_shapes(hlo: str) -> set[tuple[int, ...]]:
    """The shapes of every instruction's f32 result in the program."""
    return {
        tuple(int(d) for d in dims.split(",") if d)
        for dims in re.findall(r"^\s*(?:ROOT )?%\S+ = f32\[([\d,]*)\]", hlo, flags=re.MULTILINE)
    }


def test_no_gradient_is_written_transposed_for_a_weight_gradient():
    # With einsums over [B, T, ...], XLA:CPU fed the weight-gradient dots a transposed copy of the
    # SwiGLU and logits gradients, [F, B*T] and [V, B*T]: a strided write that cost 15-25% of the step.
    tokens = ROWS * LENGTH
    shapes = result_shapes(compiled_step_text())
    assert (tokens, CFG.mlp_dim) in shapes and (tokens, CFG.padded_vocab_size) in shapes  # the parse works
    assert (CFG.mlp_dim, tokens) not in shapes
    assert (CFG.padded_vocab_size, tokens) not in shapes


def test_the_cpu_step_is_compiled_without_ynnpack_dot_fusions():
    hlo = compiled_step_text(CFG)
    assert sharding.CPU_COMPILER_OPTIONS == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert "ynn" not in hlo.lower()
