"""Explanation-tuning records: the <system message, question, teacher response> triple.

On disk a record is one JSON object per line with OpenOrca's columns:

    {"id": "niv.242684", "system_prompt": "You are ...", "question": "...", "response": "..."}

`id` and `system_prompt` may be empty strings; `question` and `response` may not. Every line is
validated as it is read, and the first bad line stops the read with `file:line: field: reason`
(the data issue adds a `skip` policy with a rejects file).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Iterator, Sequence

from orca_jax.errors import DataError

REQUIRED_FIELDS = ("id", "system_prompt", "question", "response")
MAX_FIELD_CHARS = 1_000_000  # a field longer than this is a corrupt line, not a record


@dataclasses.dataclass(frozen=True)
class OrcaRecord:
    id: str
    system_prompt: str
    question: str
    response: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)


def parse_record(line: str, where: str) -> OrcaRecord:
    """Parses and validates one JSONL line; `where` (`file:line`) prefixes every error."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    values = {}
    for field in REQUIRED_FIELDS:
        if field not in obj:
            raise DataError(f"{where}: {field}: missing (each line needs {', '.join(REQUIRED_FIELDS)})")
        value = obj[field]
        if not isinstance(value, str):
            raise DataError(f"{where}: {field}: expected a string, got {type(value).__name__}")
        if len(value) > MAX_FIELD_CHARS:
            raise DataError(f"{where}: {field}: {len(value)} characters, over the limit of {MAX_FIELD_CHARS}")
        values[field] = value
    for field in ("question", "response"):
        if not values[field].strip():
            raise DataError(f"{where}: {field}: empty")
    return OrcaRecord(**values)


def resolve_files(patterns: str | Sequence[str]) -> list[str]:
    """Expands comma-separated paths or globs; a pattern that matches nothing is an error."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern.strip())
        matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matched = [f for f in matched if os.path.isfile(f)]
        if not matched:
            raise DataError(f"{pattern}: no such data file (check the path, or run `orca-data generate-mini`)")
        files.extend(matched)
    if not files:
        raise DataError("no data files given")
    return files


def read_jsonl(path: str) -> Iterator[OrcaRecord]:
    """Yields the validated records of one JSONL file; blank lines are allowed and skipped."""
    try:
        f = open(path, "rb")  # decoded line by line, so an encoding error names its line
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if line.strip():
                yield parse_record(line, f"{path}:{lineno}")


def read_records(patterns: str | Sequence[str]) -> list[OrcaRecord]:
    """All records of all files the patterns name, in file order."""
    return [r for path in resolve_files(patterns) for r in read_jsonl(path)]


def write_jsonl(path: str, records: Sequence[OrcaRecord]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_json() + "\n")
