"""Tests run on 8 virtual CPU devices, set here before JAX initializes its backend."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

# TensorFlow (SeqIO's input pipeline) must not take the CPU devices JAX uses for anything else.
import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 8, f"expected 8 virtual CPU devices, got {len(devs)}"
    return devs


@pytest.fixture(scope="session")
def sentencepiece_model():
    """Mistral-7B's SentencePiece model, shipped by mistral-common: LLaMA's kind (unk 0, bos 1, eos 2)."""
    import mistral_common

    return os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
