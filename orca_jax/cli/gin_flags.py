"""Flags and gin for the binaries: `--gin_file` (repeatable), `--gin.NAME=VALUE`, `--gin_search_paths`.

Gin lives only here and in the binaries: library code takes plain arguments, and this module
registers the library's config classes and entry points as gin configurables under short names.

`--gin.MODEL_DIR=/tmp/run` binds the macro MODEL_DIR; `--gin.TrainConfig.num_steps=10` binds a
parameter. A value that is not a Python literal, a gin reference (@name) or a macro (%NAME) is
taken as a string, so paths need no quotes. A binding that names no configurable, no parameter, or
no macro defined by the gin files is an error, so a typo never passes silently. Files are read in
the order given; a later file's `X = %gin.REQUIRED` keeps the value an earlier file gave X.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

import gin

from orca_jax.errors import ConfigError

# The repository's configs/ folder: `include 'models/mini.gin'` resolves against it.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def configure(prog: str, description: str, configurables: dict[str, Callable], argv: Sequence[str] | None):
    """The binaries' common start: parse flags, register the configurables, parse gin, and join the
    other hosts (multi-host). Returns the gin-wrapped configurables (with `path_join` added, for gin
    files that build paths)."""
    from orca_jax.parallel import distributed

    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_gin_flags(parser)
    distributed.add_flags(parser)
    args, bindings = parse_flags(parser, sys.argv[1:] if argv is None else argv)
    registry = register({**configurables, "path_join": path_join})
    parse_gin(args.gin_file, bindings, args.gin_search_paths)
    distributed.initialize(args, prog)
    return registry


def path_join(parts: list[str]) -> str:
    """For gin files: `@x/path_join()` with `x/path_join.parts = [%DATA_DIR, 'train.jsonl']`."""
    return os.path.join(*parts)


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gin_file", action="append", default=[], help="gin file; repeat to layer several")
    parser.add_argument(
        "--gin_search_paths", default="", help="comma-separated folders where gin files and includes are looked up"
    )


def parse_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parses `argv`; returns the namespace and the `--gin.X=Y` bindings as gin lines `X = Y`."""
    args, rest = parser.parse_known_args(argv)
    bindings = []
    for arg in rest:
        if not arg.startswith("--gin.") or "=" not in arg:
            raise ConfigError(f"unknown flag {arg!r} (see --help; gin bindings look like --gin.NAME=VALUE)")
        name, value = arg[len("--gin.") :].split("=", 1)
        bindings.append(f"{name} = {gin_value(value)}")
    return args, bindings


def gin_value(value: str) -> str:
    """`value` as gin syntax: literals, @references and %macros as written, anything else quoted."""
    stripped = value.strip()
    if stripped.startswith(("@", "%")):
        return stripped
    try:
        ast.literal_eval(stripped)
        return stripped
    except (ValueError, SyntaxError):
        return repr(value)


def register(configurables: dict[str, Callable]) -> dict[str, Callable]:
    """Makes each library class or function configurable in gin under the given name; returns the
    gin-wrapped callables, which take their arguments from the parsed config."""
    for name, fn in configurables.items():
        try:
            gin.get_configurable(name)
        except ValueError:  # not registered yet in this process (which may have run a binary before)
            with gin.unlock_config():
                gin.external_configurable(fn, name=name)
    return {name: gin.get_configurable(name) for name in configurables}


def parse_gin(files: Sequence[str], bindings: Sequence[str], search_paths: str = "") -> None:
    """Parses the gin files, then the bindings; every error becomes one ConfigError line."""
    if not files:
        raise ConfigError("no --gin_file given (for example --gin_file=configs/runs/mini_orca.gin)")
    gin.clear_config()
    paths = [p for p in search_paths.split(",") if p] + [os.getcwd(), CONFIGS_DIR]
    for f in files:
        paths.append(os.path.dirname(os.path.abspath(f)))
    for path in dict.fromkeys(paths):
        gin.add_config_file_search_path(path)
    for f in files:
        if not os.path.isfile(f) and not any(os.path.isfile(os.path.join(p, f)) for p in paths):
            raise ConfigError(f"{f}: no such gin file")
    try:
        for f in files:
            given = {name: macro_value(name) for name in macro_names()}
            with _quiet_logging():  # gin logs an error for every search path an include is not in
                gin.parse_config_files_and_bindings([f], None, finalize_config=False)
            # `X = %gin.REQUIRED` in a later file (a data config layered on finetune.gin) says X must be
            # set; it does not unset the value an earlier file gave X.
            for name, value in given.items():
                if str(value) != "%gin.REQUIRED" and str(macro_value(name)) == "%gin.REQUIRED":
                    gin.bind_parameter(f"{name}/gin.macro.value", value)
    except (OSError, ValueError, KeyError, SyntaxError) as e:
        raise ConfigError(f"gin: {_one_line(e)}") from None
    defined_macros = macro_names()
    for line in bindings:
        name = line.split("=", 1)[0].strip()
        if "." not in name and name not in defined_macros:
            hint = ", ".join(sorted(defined_macros)) or "none"
            raise ConfigError(
                f"unknown gin binding --gin.{name}: the gin files define no macro {name} (defined: {hint})"
            )
        try:
            gin.parse_config(line)
        except (ValueError, KeyError, SyntaxError) as e:
            raise ConfigError(f"gin binding --gin.{line.replace(' = ', '=', 1)}: {_one_line(e)}") from None
    missing = [name for name in sorted(defined_macros) if str(macro_value(name)) == "%gin.REQUIRED"]
    if missing:
        flags = " ".join(f"--gin.{name}=..." for name in missing)
        raise ConfigError(f"required gin macros not set: {', '.join(missing)} (pass {flags})")
    gin.finalize()


def macro_value(name: str):
    """The value the parsed config binds to the macro `name`."""
    return gin.query_parameter(f"{name}/gin.macro.value")


def macro_names() -> set[str]:
    """Every macro the parsed gin files define, bound or left `%gin.REQUIRED`."""
    return {name for (name, selector) in gin.config._CONFIG if selector == "gin.macro"}


@contextlib.contextmanager
def _quiet_logging():
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def call_configured(fn: Callable, name: str):
    """Calls the gin-configured `fn`; missing required bindings become a ConfigError."""
    try:
        return fn()
    except TypeError as e:  # the configurable itself was called with too few bindings
        if re.match(rf"{re.escape(name)}\(\) missing \d+ required", str(e)):
            raise ConfigError(f"gin: {_one_line(e)}") from None
        raise
    except RuntimeError as e:
        if "Required bindings" in str(e) or "gin.REQUIRED" in str(e):
            raise ConfigError(f"gin: {_one_line(e)}") from None
        raise


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def write_config(directory: str, filename: str = "config.gin") -> str:
    """Writes the resolved gin config (every binding in effect) into `directory`."""
    import tensorflow as tf

    from orca_jax import paths

    if tf.io.gfile.exists(directory) and not tf.io.gfile.isdir(directory):
        raise ConfigError(f"{directory} exists and is not a folder")
    path = os.path.join(directory, filename)
    paths.write_text(path, f"# Written by: {' '.join(sys.argv)}\n\n{gin.config_str()}")
    return path
