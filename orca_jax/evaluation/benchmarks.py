"""Benchmark files: BIG-Bench-Hard's format, `{"examples": [{"input": ..., "target": ...}, ...]}`."""

from __future__ import annotations

import dataclasses
import json
import os

from orca_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Example:
    task: str
    input: str
    target: str


def read_bbh_file(path: str) -> list[Example]:
    """The examples of one BBH-format file; the task is named after the file."""
    task = os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise DataError(f'{path}: expected an object with an "examples" list (BIG-Bench-Hard format)')
    examples = []
    for i, ex in enumerate(data["examples"]):
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str) or not isinstance(ex.get("target"), str):
            raise DataError(f'{path}: examples[{i}]: needs string fields "input" and "target"')
        examples.append(Example(task, ex["input"], ex["target"]))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples
