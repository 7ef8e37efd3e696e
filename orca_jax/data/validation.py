"""Checking record files before anything trains on them: `orca-data validate` and the trainer's start-up check.

Both read through readers.scan_file, the reader the tf.data pipeline shares, and write a rejected
record the same way, one JSON line each (the `--rejects` file, MODEL_DIR/rejects.jsonl):

    {"where": "data/train.jsonl:17", "reason": "missing_field", "field": "question", "detail": "missing (...)"}

so the per-line reasons of `orca-data validate --rejects` and of a training run with policy `skip`
are the same file for the same data. Counts come back per reason, with "ok" for valid records.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import TextIO

import tensorflow as tf

from orca_jax.data import readers
from orca_jax.data.config import DataConfig
from orca_jax.data.records import Rejection
from orca_jax.errors import DataError


def reject_line(where: str, rejection: Rejection) -> str:
    """One line of a rejects file."""
    return json.dumps({"where": where, "reason": rejection.reason, "field": rejection.field,
                       "detail": rejection.detail}) + "\n"  # fmt: skip


def _check_file(path: str, fmt: str, rejects: TextIO | None, stop_at_first: bool) -> tuple[Counter, str]:
    """(counts per reason and "ok", the first rejection's message) for one file."""
    counts: Counter = Counter()
    first_bad = ""
    for where, item in readers.scan_file(path, fmt):
        if isinstance(item, Rejection):
            counts[item.reason] += 1
            first_bad = first_bad or item.message(where)
            if stop_at_first:
                break
            if rejects:
                rejects.write(reject_line(where, item))
        else:
            counts["ok"] += 1
    return counts, first_bad


def validate_files(config: DataConfig, split: str, rejects_path: str = "") -> Counter:
    """Reads every record of `split` once. `strict`: the first bad one raises `file:line: field:
    reason`. `skip`: each bad line goes to `rejects_path` and the counts per reason come back."""
    counts: Counter = Counter()
    strict = config.policy == "strict"
    out = tf.io.gfile.GFile(rejects_path, "w") if rejects_path and not strict else None
    try:
        for fs in config.sources:
            files, _ = fs.files(split)
            for path in readers.resolve_files(files) if files else []:
                file_counts, first_bad = _check_file(path, fs.format, out, stop_at_first=strict)
                if first_bad and strict:
                    raise DataError(first_bad + " (DataConfig.policy = 'skip' would count it and go on)")
                counts += file_counts
    finally:
        if out:
            out.close()
    return counts


def validate(files: list[str], fmt: str = "openorca", rejects: str = "", log: Callable[[str], None] = print) -> Counter:
    """`orca-data validate`: logs counts per file and per reason; raises DataError unless every record
    is valid. Returns the totals ("valid" for valid records)."""
    totals: Counter = Counter()
    out = open(rejects, "w", encoding="utf-8") if rejects else None
    first_bad = ""
    try:
        for path in readers.resolve_files(files):
            counts, first = _check_file(path, fmt, out, stop_at_first=False)
            first_bad = first_bad or first
            counts = Counter({("valid" if k == "ok" else k): v for k, v in counts.items()})
            bad = {k: v for k, v in counts.items() if k != "valid"}
            log(f"{path}: {counts['valid']} valid" + (f", rejected {bad}" if bad else ""))
            totals += counts
    finally:
        if out:
            out.close()
    bad_total = sum(v for k, v in totals.items() if k != "valid")
    log(f"{totals['valid']} valid, {bad_total} rejected" + (f" {dict(totals - Counter(valid=totals['valid']))}"
                                                          if bad_total else ""))  # fmt: skip
    if bad_total:
        where = f" (each listed in {rejects})" if rejects else " (--rejects FILE lists each)"
        raise DataError(f"{bad_total} invalid records{where}; the first: {first_bad}")
    return totals
