"""Model presets: each gin preset builds the published model, and llama1_13b's sharding is pinned.

The golden file lists every parameter's shape and PartitionSpec for Orca's base model. When a change
to the model or the rules table is intended, regenerate it with `python tests/test_presets.py`.
"""

import difflib
import os
import sys

import gin
import pytest

from orca_jax.cli import gin_flags
from orca_jax.errors import ConfigError
from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder, abstract_params
from orca_jax.parallel import sharding
from orca_jax.parallel.sharding import MeshConfig

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "llama1_13b_param_specs.txt")
PUBLISHED_PARAMS = {  # parameter counts of the released checkpoints (Hugging Face num_parameters())
    "llama1_7b": 6_738_415_616,
    "llama2_7b": 6_738_415_616,
    "llama2_13b": 13_015_864_320,
    "llama1_13b": 13_015_864_320 + 2 * 128 * 5120,  # Orca's 32,001 ids pad the table to 32,128 rows
    "llama3_8b": 8_030_261_248,
    "mistral_7b": 7_241_732_096,
}


def preset(name: str) -> ModelConfig:
    def model(config):
        return config

    configured = gin_flags.register({"ModelConfig": ModelConfig, "preset_model": model})["preset_model"]
    gin.clear_config()
    gin.parse_config_file(os.path.join(gin_flags.CONFIGS_DIR, "models", f"{name}.gin"))
    gin.parse_config("preset_model.config = %MODEL")
    config = configured()
    gin.clear_config()
    return config


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_preset_has_the_published_parameter_count(name):
    assert preset(name).num_params() == PUBLISHED_PARAMS[name]


def test_preset_details():
    assert preset("llama3_8b").rope_scaling_factor == 8.0 and preset("llama3_8b").kv_heads == 8
    assert preset("mistral_7b").sliding_window == 4096
    assert preset("llama1_13b").padded_vocab_size == 32128
    assert preset("llama1_13b").dtype == "bfloat16" and preset("llama1_13b").param_dtype == "float32"
    assert preset("tiny").num_params() < 20_000_000


def current_specs() -> str:
    return "\n".join(sharding.describe_param_shardings(abstract_params(Decoder(preset("llama1_13b"))))) + "\n"


def test_llama1_13b_partition_specs_match_the_golden_file():
    golden = open(GOLDEN).read()
    now = current_specs()
    diff = "".join(difflib.unified_diff(golden.splitlines(True), now.splitlines(True), "golden", "now"))
    assert now == golden, f"sharding changed; if intended, run `python tests/test_presets.py`:\n{diff}"


def test_the_embedding_table_is_split_on_one_dimension_only():
    line = next(x for x in current_specs().splitlines() if x.startswith("['embedding']"))
    assert line.endswith("P(('tensor', 'fsdp'), None)")


def test_a_dimension_that_does_not_split_is_a_clear_error(devices):
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=1, tensor=8), devices)
    with pytest.raises(ConfigError, match=r"\['layers'\]\['wk'\]: dimension 2 .* size 2, .*tensor"):
        sharding.shardings_of(abstract_params(Decoder(preset("tiny"))), mesh)


if __name__ == "__main__":
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "w") as f:
        f.write(current_specs())
    print(f"wrote {GOLDEN}", file=sys.stderr)
