"""`orca_jax.load(path)`: a model for notebooks and scripts.

    import orca_jax
    model = orca_jax.load("/runs/mini")             # an orca_jax run or export, or a Hugging Face folder
    logits = model.logits([[1, 300, 301]])          # float32 [batch, length, vocab_size]
    model.generate(["What is 2 + 3?"], max_new_tokens=64)                   # plain text prompts
    model.generate([model.chat_prompt("What is 2 + 3?")], max_new_tokens=64) # in the chat template

The parameters are placed on all local devices (a `MeshConfig` chooses the layout); everything runs
through the same jitted model code as training and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from orca_jax.checkpoints import bundle
from orca_jax.data.templates import get_template
from orca_jax.data.vocab import DEFAULT_EOS_ID
from orca_jax.model.decode import generate, prepare
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig


class LoadedModel:
    def __init__(self, model_bundle: bundle.ModelBundle, mesh):
        self.bundle = model_bundle
        self.config = model_bundle.config
        self.mesh = mesh
        model = model_bundle.model
        self._forward = jax.jit(
            lambda params, tokens: model.apply(
                {"params": params},
                tokens,
                jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape),
                jnp.ones_like(tokens),
            )  # fmt: skip
        )

    def logits(self, token_ids) -> np.ndarray:
        """int32 [batch, length] token ids (no padding) -> float32 [batch, length, vocab_size] logits."""
        tokens = np.asarray(token_ids, np.int32)
        if tokens.ndim != 2:
            raise ValueError(f"token_ids must be [batch, length], got shape {tokens.shape}")
        with sharding.use_mesh(self.mesh):
            out = self._forward(self.bundle.params, jnp.asarray(tokens))
        return np.asarray(out)[..., : self.config.vocab_size]

    def chat_prompt(self, question: str, system: str = "") -> str:
        """`question` rendered through the model's chat template, ready for `generate` (which adds BOS):
        the one a run trained in, or a Hugging Face folder's own chat_template (else Orca's). For a
        model's own template it is transformers' apply_chat_template(add_generation_prompt=True)
        without the leading BOS."""
        return get_template(self.bundle.template).prompt(system, question)

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str] | list[list[int]]:
        """Continues each prompt: text (BOS added, the reply returned as text without EOS) or token
        id lists (returned as token ids, EOS included). Greedy unless `temperature` > 0."""
        as_text = isinstance(prompts[0], str)
        vocab = self.bundle.vocabulary() if as_text else None
        if as_text:
            token_prompts = [[vocab.bos_id, *vocab.encode(p)] for p in prompts]
            eos = vocab.eos_id
        else:
            token_prompts = [list(map(int, p)) for p in prompts]
            eos = self.bundle.vocabulary().eos_id if self.bundle.vocabulary_spec else DEFAULT_EOS_ID
        with sharding.use_mesh(self.mesh):
            model = self.bundle.model
            out = generate(
                model, prepare(model, self.bundle.params), token_prompts, max_new_tokens=max_new_tokens, eos_id=eos,
                mesh=self.mesh, temperature=temperature, top_p=top_p, seed=seed,
            )  # fmt: skip
        if not as_text:
            return out
        return [vocab.decode([t for t in row if t != eos]) for row in out]


def load(path: str, *, step: int | None = None, dtype: str = "", mesh_config: MeshConfig = MeshConfig()) -> LoadedModel:
    """The model in `path`: an orca_jax run (latest checkpoint, or `step`), a parameters-only export,
    an `orca-import-hf` output, or a Hugging Face LLaMA / Mistral folder. The model computes in the
    dtype its source says: a run's ModelConfig, an import's imported dtype, or a Hugging Face
    folder's weights' dtype (so an fp32 Llama gives transformers' fp32 logits). `dtype` ("float32",
    "bfloat16") overrides that compute dtype; the parameters stay as stored."""
    mesh = sharding.make_mesh(mesh_config, jax.local_devices())
    with sharding.use_mesh(mesh):
        return LoadedModel(bundle.load(path, mesh, step=step, compute_dtype=dtype), mesh)
