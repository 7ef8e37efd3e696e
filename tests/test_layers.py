"""The package's layers only point down: a module imports its own package and the layers below it.

    cli            every binary (thin: flags and gin at the edge, then one library call)
    api, study     orca_jax.load; the mini-Orca study
    training       the train step, the loop, the optimizer
    evaluation     benchmarks, answers, held-out loss
    checkpoints    Orbax run checkpoints, bundles, Hugging Face weights
    model, datagen the decoder; the data makers (teacher collection, FLAN sampling, mini-Orca)
    data, parallel records -> tokens -> packed rows; the mesh and the sharding rules
    errors, paths, console

Same-layer packages do not import each other either (data and parallel know nothing of one another).
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "orca_jax"

LAYERS = {
    "errors": 0,
    "paths": 0,
    "console": 0,
    "data": 1,
    "parallel": 1,
    "model": 2,
    "datagen": 2,
    "checkpoints": 3,
    "evaluation": 4,
    "training": 5,
    "api": 6,
    "study": 6,
    "cli": 7,
}


def unit_of(dotted: str) -> str:
    """'orca_jax.data.records' -> 'data'; the package's own __init__ is 'orca_jax'."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "orca_jax"


def imports_of(path: pathlib.Path) -> list[tuple[int, str]]:
    """Every orca_jax module `path` imports, at any depth (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("orca_jax")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("orca_jax"):
            if node.module == "orca_jax":
                found += [(node.lineno, f"orca_jax.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def module_files() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def violations(files: list[pathlib.Path]) -> list[str]:
    bad = []
    for path in files:
        own = unit_of("orca_jax." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for line, target in imports_of(path):
            other = unit_of(target)
            if other == own:
                continue
            if own not in LAYERS or other not in LAYERS:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target} (add '{own}' or '{other}' to LAYERS)")
            elif LAYERS[other] >= LAYERS[own]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} imports {target}, a layer at or above it")
    return bad


def test_every_import_points_down():
    assert violations(module_files()) == []


def test_every_top_level_unit_has_a_layer():
    units = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert units <= set(LAYERS), f"give these a layer: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from orca_jax.training import step\n", "evaluation imports orca_jax.training"),
        ("def f():\n    from orca_jax.cli import gin_flags\n", "evaluation imports orca_jax.cli"),
        ("from orca_jax import api\n", "evaluation imports orca_jax.api"),
    ],
)
def test_the_guard_catches_an_upward_import(tmp_path, monkeypatch, source, expected):
    fake = tmp_path / "orca_jax"
    (fake / "evaluation").mkdir(parents=True)
    (fake / "evaluation" / "bad.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    [message] = violations([fake / "evaluation" / "bad.py"])
    assert expected in message


def test_the_guard_catches_a_same_layer_sibling(tmp_path, monkeypatch):
    fake = tmp_path / "orca_jax"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("from orca_jax.parallel import sharding\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    [message] = violations([fake / "data" / "bad.py"])
    assert "data imports orca_jax.parallel" in message


def is_binary(path: pathlib.Path) -> bool:
    return path.parent.name == "cli" and "\ndef main(" in path.read_text()


def test_modules_and_binaries_stay_small():
    too_long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in module_files()
        if (n := len(p.read_text().splitlines())) > (150 if is_binary(p) else 400)
    }
    assert too_long == {}, "modules over 400 lines, or binaries (cli/ modules with a main) over 150"
