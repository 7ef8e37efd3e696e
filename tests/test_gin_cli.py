"""Flags and gin at the binary edge: values, bindings, macros and their errors."""

import gin
import pytest

from orca_jax.cli import gin_flags
from orca_jax.errors import ConfigError


@pytest.mark.parametrize(
    "value, expected",
    [
        ("/tmp/run", "'/tmp/run'"),
        ("3", "3"),
        ("3e-4", "3e-4"),
        ("True", "True"),
        ("None", "None"),
        ("'quoted'", "'quoted'"),
        ("[1, 2]", "[1, 2]"),
        ("@MeshConfig()", "@MeshConfig()"),
        ("%MODEL_DIR", "%MODEL_DIR"),
        ("run 1", "'run 1'"),
    ],
)
def test_gin_value_quotes_only_what_is_not_gin_syntax(value, expected):
    assert gin_flags.gin_value(value) == expected


def example(model_dir, steps=1):
    return model_dir, steps


@pytest.fixture()
def gin_file(tmp_path):
    path = tmp_path / "run.gin"
    path.write_text("MODEL_DIR = %gin.REQUIRED\nexample.model_dir = %MODEL_DIR\n")
    return str(path)


def test_bindings_override_files_and_required_macros_are_enforced(gin_file):
    configured = gin_flags.register({"example": example})["example"]
    gin_flags.parse_gin([gin_file], ["MODEL_DIR = '/x'", "example.steps = 5"])
    assert gin_flags.call_configured(configured, "example") == ("/x", 5)
    assert gin_flags.macro_value("MODEL_DIR") == "/x"
    with pytest.raises(ConfigError, match=r"required gin macros not set: MODEL_DIR \(pass --gin.MODEL_DIR=...\)"):
        gin_flags.parse_gin([gin_file], [])


def test_unknown_macro_parameter_and_configurable(gin_file):
    gin_flags.register({"example": example})
    with pytest.raises(ConfigError, match="no macro MODEL_DRI .defined: MODEL_DIR."):
        gin_flags.parse_gin([gin_file], ["MODEL_DRI = '/x'"])
    with pytest.raises(ConfigError, match="--gin.example.stepz=5"):
        gin_flags.parse_gin([gin_file], ["MODEL_DIR = '/x'", "example.stepz = 5"])
    with pytest.raises(ConfigError, match="Nothing"):
        gin_flags.parse_gin([gin_file], ["MODEL_DIR = '/x'", "Nothing.x = 5"])
    gin.clear_config()


def test_flags_become_gin_lines_and_stray_flags_are_refused():
    import argparse

    parser = argparse.ArgumentParser()
    gin_flags.add_gin_flags(parser)
    args, bindings = gin_flags.parse_flags(parser, ["--gin_file=a.gin", "--gin.MODEL_DIR=/tmp/m", "--gin.X.y=2"])
    assert args.gin_file == ["a.gin"] and bindings == ["MODEL_DIR = '/tmp/m'", "X.y = 2"]
    with pytest.raises(ConfigError, match="unknown flag '--bogus'"):
        gin_flags.parse_flags(parser, ["--bogus"])
