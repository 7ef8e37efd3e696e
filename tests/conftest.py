"""Tests run on 8 virtual CPU devices, set here before JAX initializes its backend.

Compiled programs go to a persistent cache (REPO/.jax_cache, or $JAX_COMPILATION_CACHE_DIR) that the
binaries the tests start as subprocesses share through the environment: the suite compiles the same
small programs in many tests and processes, and each is compiled once per machine. The cache is
keyed by the program, JAX's version and the compiler's flags, so a stale entry is never used.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # the tests' programs are small
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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
