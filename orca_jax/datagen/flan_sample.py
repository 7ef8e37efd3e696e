"""Orca's query mixture, sampled from FLAN-v2's zero-shot sub-collections (`orca-data sample`).

Orca did not answer all of FLAN-v2: it took every CoT query, at most 300 queries per NiV2 task,
and 2.5M Flan 2021 and 2M T0 queries by stratified sampling (pick a task uniformly at random, then
one of its queries without replacement), and skipped Dialog, whose queries lack their context.

Input layout (Open-Orca/FLAN on Hugging Face, or Google's FLAN export): one folder or file per
sub-collection under `--flan_dir`, found by name, zero-shot only:

    cot_zsopt_data/ niv2_zsopt_data/ flan_zsopt_data/ t0_zsopt_data/   folders of part.N.parquet
                                                                       (or .json / .jsonl) files
    cot_zs_submix_data.json, flan_zs_opt_train.jsonl, ...              a single file per collection

A `<prefix>_zsopt_data` folder wins over other `<prefix>_zs*` entries; `--cot/--niv/--flan/--t0`
name a collection's files directly (paths or globs). `dialog_*` is never read. JSON files may be
JSON lines or one JSON array. Fields read from each row, nothing else:

    inputs          the query (`input` is accepted); rows with an empty query are skipped
    _task_name      the FLAN task, the unit of stratification (`task_name`, or `metadata._task_name`
                    as some exports nest it); required for NiV2, Flan 2021 and T0
    _template_type  `zs_opt`, `zs_noopt`, `fs_opt`, ... (`template_type`); few-shot rows (`fs*`)
                    are skipped, so a mixed file still yields zero-shot queries only

Output: JSONL in OpenOrca's columns, one query per line, in a seeded random order (so a collection
run cut short is still a mix), `response` empty because no teacher has answered yet:

    {"id": "niv.1234", "system_prompt": "...", "question": "...", "response": "", "collection": "niv"}

The id is the collection and the row's position in its files (stable for the same files); the
system message is Orca's for the collection (`system_messages.orca_message`). `orca-data collect`
reads these files; `orca-data validate` reports every line as `empty_field: response`, as it must:
they are queries, not yet training data. Everything is a function of the files, flags and seed.

`subset(...)` draws Orca's FLAN-1M from FLAN-5M: N records of a query or response file, uniformly
without replacement, written back as queries (same ids and system messages, response emptied).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tempfile
from array import array
from collections.abc import Iterator

import numpy as np

from orca_jax.data.system_messages import orca_message, stable_index
from orca_jax.datagen.collect import read_queries
from orca_jax.errors import DataError

PREFIXES = {"cot": "cot", "niv": "niv2", "flan": "flan", "t0": "t0"}  # our collection -> FLAN-v2 name
DEFAULT_NUM = {"cot": None, "niv": None, "flan": 2_500_000, "t0": 2_000_000}  # None: all the caps allow
DEFAULT_PER_TASK = {"cot": None, "niv": 300, "flan": None, "t0": None}
TASK_REQUIRED = ("niv", "flan", "t0")
DATA_EXTENSIONS = (".parquet", ".json", ".jsonl")
QUERY_FIELDS = ("inputs", "input")
TASK_FIELDS = ("_task_name", "task_name")
TYPE_FIELDS = ("_template_type", "template_type")
SHUFFLE_BUCKET = 100_000  # records per temporary bucket of the bounded-memory shuffle


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many queries to draw from one sub-collection: `num` None takes all that `per_task` allows."""

    files: tuple[str, ...]
    num: int | None
    per_task: int | None


def find_files(flan_dir: str, collection: str) -> list[str]:
    """The zero-shot files of one sub-collection under `flan_dir` (see the module docstring)."""
    prefix = PREFIXES[collection]
    if not os.path.isdir(flan_dir):
        raise DataError(f"{flan_dir}: no such folder (--flan_dir is the folder holding {prefix}_zsopt_data/ etc.)")
    preferred = os.path.join(flan_dir, f"{prefix}_zsopt_data")
    entries = [preferred] if os.path.isdir(preferred) else sorted(glob.glob(os.path.join(flan_dir, f"{prefix}_zs*")))
    if len(entries) != 1:
        found = ", ".join(os.path.basename(e) for e in entries) or "nothing"
        raise DataError(f"{flan_dir}: expected one {prefix}_zsopt_data/ folder or {prefix}_zs* file for "
                        f"{collection}, found {found}; name its files with --{collection} (or skip it with "
                        f"--{collection}_num 0)")  # fmt: skip
    return expand(entries[0])


def expand(pattern: str) -> list[str]:
    """A file, a folder (its data files) or a glob, as a sorted list of data files."""
    paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(DATA_EXTENSIONS))
        elif os.path.isfile(p):
            files.append(p)
    if not files:
        raise DataError(f"{pattern}: no data files (.parquet, .json or .jsonl)")
    return files


def _field(row: dict, names: tuple[str, ...]):
    for name in names:
        if name in row:
            return row[name]
    meta = row.get("metadata")
    if isinstance(meta, dict):
        return _field(meta, names)
    return None


def _read_rows(path: str, names: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    """(`file:row`, the row's fields among `names` and `metadata`) for every row of one file."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
            columns = [c for c in pf.schema_arrow.names if c in names or c == "metadata"]
            row = 0
            for batch in pf.iter_batches(batch_size=8192, columns=columns):
                for obj in batch.to_pylist():
                    row += 1
                    yield f"{path}:{row}", obj
        except OSError as e:  # pyarrow reports a corrupt or truncated file as an OSError
            raise DataError(f"{path}: cannot read as parquet ({e})") from None
        return
    with open(path, "rb") as f:
        head = f.read(1024).lstrip()
        f.seek(0)
        if head.startswith(b"["):  # one JSON array: there is no streaming it with the standard library
            try:
                rows = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{path}: not valid JSON ({e})") from None
            for i, obj in enumerate(rows, start=1):
                yield f"{path}:{i}", obj if isinstance(obj, dict) else {}
            return
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{path}:{lineno}: not a JSON object ({e})") from None
            yield f"{path}:{lineno}", obj if isinstance(obj, dict) else {}


def _rows(files: tuple[str, ...]) -> Iterator[tuple[int, str, dict]]:
    """(row number within the collection, where, row) over all of a collection's files."""
    n = 0
    for path in files:
        for where, row in _read_rows(path, QUERY_FIELDS + TASK_FIELDS + TYPE_FIELDS):
            yield n, where, row
            n += 1


def index_tasks(collection: str, files: tuple[str, ...]) -> dict[str, array]:
    """Task name -> row numbers of its zero-shot queries (compact arrays: T0 has ~86M rows)."""
    tasks: dict[str, array] = {}
    for n, where, row in _rows(files):
        query = _field(row, QUERY_FIELDS)
        if not isinstance(query, str):
            raise DataError(f"{where}: no query text (field `inputs`)")
        template_type = _field(row, TYPE_FIELDS)
        if not query.strip() or (isinstance(template_type, str) and template_type.startswith("fs")):
            continue
        task = _field(row, TASK_FIELDS)
        if not isinstance(task, str):
            if collection in TASK_REQUIRED:
                raise DataError(f"{where}: no task name (field `_task_name` or `task_name`); {collection} queries"
                                " are sampled per task")  # fmt: skip
            task = ""
        tasks.setdefault(task, array("Q")).append(n)
    return tasks


def allocate(sizes: np.ndarray, num: int | None, per_task: int | None, rng: np.random.Generator) -> np.ndarray:
    """Queries per task under Orca's scheme: repeatedly pick a task uniformly, take one of its queries.

    A pick that lands on an exhausted task is drawn again, so the picks are uniform over the tasks
    that still have queries. Drawing `remaining` picks at once (a multinomial) and clipping each task
    at what it has left is the same process in bulk: the clipped picks are exactly those that landed
    on a task after it ran out, and they are redrawn over the rest."""
    caps = sizes if per_task is None else np.minimum(sizes, per_task)
    if num is None or num >= caps.sum():
        return caps.copy()
    counts = np.zeros_like(caps)
    remaining = num
    while remaining > 0:
        open_tasks = np.flatnonzero(counts < caps)
        picks = rng.multinomial(remaining, np.full(len(open_tasks), 1.0 / len(open_tasks)))
        taken = np.minimum(picks, caps[open_tasks] - counts[open_tasks])
        counts[open_tasks] += taken
        remaining -= int(taken.sum())
    return counts


def sample_rows(tasks: dict[str, array], plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """The chosen row numbers, sorted; within a task, without replacement."""
    names = sorted(tasks)  # a fixed order, whatever order the files listed the tasks in
    counts = allocate(np.array([len(tasks[t]) for t in names], dtype=np.int64), plan.num, plan.per_task, rng)
    chosen = [np.asarray(tasks[t], dtype=np.int64)[rng.choice(len(tasks[t]), k, replace=False)]
              for t, k in zip(names, counts, strict=True) if k]  # fmt: skip
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _query_record(collection: str, n: int, question: str, seed: int) -> dict:
    record_id = f"{collection}.{n}"
    return {"id": record_id, "system_prompt": orca_message(record_id, question, collection, seed),
            "question": question, "response": "", "collection": collection}  # fmt: skip


def _order_key(record_id: str, seed: int) -> int:
    return stable_index(record_id, 2**61, seed + 1)


class ShuffledWriter:
    """Writes JSON lines in a seeded random order with bounded memory: lines go to temporary buckets
    by a hash of their id, then each bucket is sorted by that hash and appended to the output."""

    def __init__(self, out: str, expected: int, seed: int):
        self.out, self.seed = out, seed
        self.buckets = max(1, -(-expected // SHUFFLE_BUCKET))
        self.tmp = tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out)), prefix=".sample-")
        self.files = [open(os.path.join(self.tmp.name, f"{i}.jsonl"), "w", encoding="utf-8")
                      for i in range(self.buckets)]  # fmt: skip

    def add(self, record: dict) -> None:
        key = _order_key(record["id"], self.seed)
        self.files[key % self.buckets].write(f"{key}\t{json.dumps(record, ensure_ascii=False)}\n")

    def finish(self) -> None:
        partial = self.out + ".partial"  # the output appears whole or not at all
        with open(partial, "w", encoding="utf-8") as out:
            for f in self.files:
                f.close()
                with open(f.name, encoding="utf-8") as g:
                    lines = sorted((int(k), v) for k, v in (line.split("\t", 1) for line in g))
                out.writelines(v for _, v in lines)
        os.replace(partial, self.out)
        self.tmp.cleanup()


def sample(plans: dict[str, Plan], out: str, seed: int = 0, log=print) -> dict[str, int]:
    """Samples every planned collection and writes the queries to `out`; returns counts per collection."""
    chosen: dict[str, np.ndarray] = {}
    for collection, plan in plans.items():
        tasks = index_tasks(collection, plan.files)
        pool = sum(len(v) for v in tasks.values())
        rng = np.random.default_rng([seed, list(PREFIXES).index(collection)])  # collections drawn independently
        chosen[collection] = sample_rows(tasks, plan, rng)
        log(f"{collection:<5} {len(chosen[collection]):>10,} of {pool:,} zero-shot queries in {len(tasks):,} tasks "
            f"({len(plan.files)} files)")  # fmt: skip
    writer = ShuffledWriter(out, sum(len(c) for c in chosen.values()), seed)
    for collection, rows in chosen.items():
        position = 0
        for n, _, row in _rows(plans[collection].files):
            if position == len(rows):
                break
            if n == rows[position]:
                writer.add(_query_record(collection, n, _field(row, QUERY_FIELDS), seed))
                position += 1
    writer.finish()
    return {c: len(r) for c, r in chosen.items()}


def subset(source: str, num: int, out: str, seed: int = 0) -> int:
    """`num` records of `source` (queries or answered records), uniformly without replacement, in
    their original order, written to `out` as queries. Returns how many were written."""
    total = sum(1 for _ in read_queries(source))
    if num > total:
        raise DataError(f"{source}: has {total:,} records, fewer than --num {num:,}")
    keep = set(np.random.default_rng([seed, 99]).choice(total, num, replace=False).tolist())
    partial = out + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        for i, (_, obj) in enumerate(read_queries(source)):
            if i in keep:
                record = {"id": obj["id"], "system_prompt": obj.get("system_prompt") or "",
                          "question": obj["question"], "response": ""}  # fmt: skip
                if obj.get("collection"):
                    record["collection"] = obj["collection"]
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, out)
    return num


def sample_queries(out: str, *, flan_dir: str = "", subset_of: str = "", num: int = 0, seed: int = 0,
                   overwrite: bool = False, log=print, **per_collection: str | int | None) -> None:  # fmt: skip
    """`orca-data sample`: Orca's FLAN-v2 mixture (`sample`), or with `subset_of` a uniform subset of
    a query file (FLAN-1M of FLAN-5M). For each collection c of PREFIXES, `per_collection` may give
    `c` (its files instead of `flan_dir`'s), `c_num` (queries to draw; None: DEFAULT_NUM, 0: skip
    it) and `c_per_task` (the cap per task; None: DEFAULT_PER_TASK, 0: no cap)."""
    unknown = set(per_collection) - {f"{c}{s}" for c in PREFIXES for s in ("", "_num", "_per_task")}
    if unknown:
        raise TypeError(f"sample_queries: unknown arguments {sorted(unknown)}")
    if os.path.exists(out) and not overwrite:
        raise DataError(f"{out}: exists; choose another --out or pass --overwrite")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise DataError(f"{out}: its folder does not exist")
    if num and not subset_of:
        raise DataError("--num goes with --subset_of; size the mixture with --cot_num, --niv_num, --flan_num, --t0_num")
    if subset_of:
        if not num:
            raise DataError("--subset_of needs --num (how many records to keep)")
        subset(subset_of, num, out, seed)
        log(f"{out}: {num:,} queries drawn from {subset_of} (seed {seed})")
        return
    plans = {}
    for c in PREFIXES:
        n = per_collection.get(f"{c}_num")
        n = DEFAULT_NUM[c] if n is None else n
        if n == 0:
            continue  # the user skips this collection
        cap = per_collection.get(f"{c}_per_task")
        cap = DEFAULT_PER_TASK[c] if cap is None else (cap or None)
        pattern = per_collection.get(c) or ""
        if not pattern and not flan_dir:
            raise DataError(f"no files for {c}: pass --flan_dir DIR or --{c} FILES (or --{c}_num 0 to skip it)")
        found = expand(pattern) if pattern else find_files(flan_dir, c)
        plans[c] = Plan(tuple(found), n, cap)
    if not plans:
        raise DataError("every collection is skipped (--*_num 0): nothing to sample")
    counts = sample(plans, out, seed)
    log(f"{out}: {sum(counts.values()):,} queries (dialog skipped), seed {seed}")
