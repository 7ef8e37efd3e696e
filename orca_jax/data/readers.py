"""Record files -> records, the same way for a Python scan and for the tf.data input pipeline.

File types, by extension (local paths, globs, or gs://):

    jsonl      .jsonl, .json: one record per line; blank lines are skipped (but counted in line numbers)
    tfrecord   .tfrecord, .tfrecord-00000-of-00004, ...: one tf.train.Example per entry
    parquet    .parquet: one record per row

Each file type has one way to cut a file into raw items and one function from a raw item to a
record or a rejection (records.py). Both readers below use exactly those:

    scan_file(path, fmt)     Python: (where, OrcaRecord | Rejection) per item, for `orca-data
                             validate`, `orca-data stats`, the trainer's start-up check, the TFDS builder
    file_source(files, ...)  tf.data (a SeqIO source): per item a dict of scalar string features
                             id, system_prompt, question, response, collection, and `reject`:
                             0 for a record, else records.reason_code(reason) with empty strings

So a file yields the same records, and the same rejects, wherever it is read. `where` is
`file:line` for JSONL and `file:row` for parquet and TFRecord (1-based); a record without an id
(ShareGPT) takes `basename:line` as its id.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import seqio
import tensorflow as tf

from orca_jax.data import records
from orca_jax.data.records import OrcaRecord, Rejection
from orca_jax.errors import DataError

_SCAN_BATCH = 4096  # raw items per step of a Python scan: tf.data's per-element cost would dominate


def file_type(path: str) -> str:
    name = os.path.basename(path)
    if name.endswith(".parquet"):
        return "parquet"
    if ".tfrecord" in name:
        return "tfrecord"
    return "jsonl"


def resolve_files(patterns: str | Sequence[str]) -> list[str]:
    """Expands comma-separated paths or globs (local or gs://); a pattern matching nothing is an error."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern.strip())
        matched = sorted(tf.io.gfile.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        matched = [f for f in matched if tf.io.gfile.exists(f) and not tf.io.gfile.isdir(f)]
        if not matched:
            raise DataError(f"{pattern}: no such data file (check the path, or run `orca-data generate-mini`)")
        files.extend(matched)
    if not files:
        raise DataError("no data files given")
    return files


def check_format(path: str, fmt: str) -> str:
    """The file's type, once the record format is known to be readable from it."""
    if fmt not in records.FORMATS:
        raise DataError(f"unknown record format {fmt!r}; choose one of {records.FORMATS}")
    kind = file_type(path)
    if fmt == "sharegpt" and kind != "jsonl":
        raise DataError(f"{path}: the sharegpt format is read from JSONL files only")
    return kind


# The raw items of each file type, and what parses one.

_PARSERS: dict[str, Callable[[bytes, str, str], OrcaRecord | Rejection]] = {
    "jsonl": records.record_from_line, "tfrecord": records.record_from_example,
}  # fmt: skip


def raw_items(path: str | tf.Tensor, kind: str) -> tf.data.Dataset:
    """(0-based line or entry number, raw bytes) of a JSONL or TFRecord file, blank lines left out
    (blank: only ASCII whitespace, the same test as `bytes.strip` in `_raw_batches`)."""
    if kind == "tfrecord":
        return tf.data.TFRecordDataset(path).enumerate()
    lines = tf.data.TextLineDataset(path).enumerate()
    return lines.filter(lambda i, line: tf.strings.length(tf.strings.strip(line)) > 0)


def _raw_batches(path: str, kind: str) -> Iterator[list[tuple[int, bytes]]]:
    """`raw_items` for Python, from the same file readers a batch at a time: per-element tf.data
    steps would cost several times the parsing of the records."""
    reader = tf.data.TFRecordDataset if kind == "tfrecord" else tf.data.TextLineDataset
    start = 0
    for raws in reader(path).batch(_SCAN_BATCH).as_numpy_iterator():
        yield [(start + i, raw) for i, raw in enumerate(raws) if kind == "tfrecord" or raw.strip()]
        start += len(raws)


def open_parquet(path: str):
    """A pyarrow ParquetFile for a local path or a URI (gs://, s3://) through pyarrow's filesystems."""
    import pyarrow.fs
    import pyarrow.parquet as pq

    if "://" in path:
        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        return pq.ParquetFile(fs.open_input_file(inner))
    return pq.ParquetFile(path)


def parquet_row_group(path: str, group: int, fmt: str) -> list[tuple[int, OrcaRecord | Rejection]]:
    """(1-based row number, record or rejection) for each row of one row group."""
    parquet = open_parquet(path)
    first = sum(parquet.metadata.row_group(g).num_rows for g in range(group))
    base = os.path.basename(path)
    rows = parquet.read_row_group(group).to_pylist()
    numbered = enumerate(rows, start=first + 1)
    return [(n, records.record_from_object(obj, fmt, f"{base}:{n}")) for n, obj in numbered]


# The Python reader.


def scan_file(path: str, fmt: str) -> Iterator[tuple[str, OrcaRecord | Rejection]]:
    """(where, record or rejection) for every record of one file, in order."""
    kind = check_format(path, fmt)
    base = os.path.basename(path)
    try:
        if kind == "parquet":
            for group in range(open_parquet(path).num_row_groups):
                for n, item in parquet_row_group(path, group, fmt):
                    yield f"{path}:{n}", item
            return
        parse = _PARSERS[kind]
        for batch in _raw_batches(path, kind):
            for i, raw in batch:
                yield f"{path}:{i + 1}", parse(raw, fmt, f"{base}:{i + 1}")
    except (OSError, tf.errors.OpError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'message', None) or e})") from None


def read_records(patterns: str | Sequence[str], fmt: str = "openorca") -> list[OrcaRecord]:
    """All records of all files, in order; the first bad one stops the read with `file:line: ...`."""
    out = []
    for path in resolve_files(patterns):
        for where, item in scan_file(path, fmt):
            if isinstance(item, Rejection):
                raise DataError(item.message(where))
            out.append(item)
    return out


# The tf.data reader: the same items through tf.numpy_function.

_OUT_TYPES = [tf.string] * len(records.TEXT_FIELDS) + [tf.int32]


def _as_columns(items: Sequence[OrcaRecord | Rejection]) -> list[np.ndarray]:
    """Records and rejections -> one column per text field, plus the reject codes."""
    columns: list[list] = [[] for _ in range(len(records.TEXT_FIELDS) + 1)]
    for item in items:
        if isinstance(item, Rejection):
            values = [b""] * len(records.TEXT_FIELDS) + [records.reason_code(item.reason)]
        else:
            values = [getattr(item, f).encode("utf-8") for f in records.TEXT_FIELDS] + [0]
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return [np.array(c, dtype=object) for c in columns[:-1]] + [np.array(columns[-1], np.int32)]


def _to_dict(*tensors, shape=()) -> dict:
    """numpy_function outputs -> a record dict, with the static shapes tf.data needs."""
    return {k: tf.ensure_shape(t, shape) for k, t in zip((*records.TEXT_FIELDS, "reject"), tensors, strict=True)}


def _item_reader(kind: str, fmt: str):
    parse = _PARSERS[kind]

    def parse_one(file: bytes, index: np.ndarray, raw: bytes) -> list[np.ndarray]:
        fallback = f"{os.path.basename(file.decode())}:{int(index) + 1}"
        return [c[0] for c in _as_columns([parse(raw, fmt, fallback)])]

    def read(file: tf.Tensor) -> tf.data.Dataset:
        return raw_items(file, kind).map(
            lambda i, raw: _to_dict(*tf.numpy_function(parse_one, [file, i, raw], _OUT_TYPES, stateful=False))
        )

    return read


def _parquet_reader(fmt: str, files: list[str]):
    groups = {f: open_parquet(f).num_row_groups for f in files}
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(list(groups), tf.constant(list(groups.values()), tf.int64)), -1
    )

    def read_group(file: bytes, group: np.ndarray) -> list[np.ndarray]:
        return _as_columns([item for _, item in parquet_row_group(file.decode(), int(group), fmt)])

    def read(file: tf.Tensor) -> tf.data.Dataset:
        groups_ds = tf.data.Dataset.range(table.lookup(file))
        columns = groups_ds.map(lambda g: tuple(tf.numpy_function(read_group, [file, g], _OUT_TYPES, stateful=False)))
        return columns.flat_map(lambda *c: tf.data.Dataset.from_tensor_slices(_to_dict(*c, shape=[None])))

    return read


def file_source(files: str, fmt: str, split: str) -> seqio.DataSource:
    """A SeqIO source over record files of one type (see the module docstring for its features)."""
    paths = resolve_files(files)
    kinds = {check_format(p, fmt) for p in paths}
    if len(kinds) > 1:
        raise DataError(f"{files}: one file set must hold one file type, got {sorted(kinds)}")
    kind = kinds.pop()
    reader = _parquet_reader(fmt, paths) if kind == "parquet" else _item_reader(kind, fmt)
    return seqio.FileDataSource(read_file_fn=reader, split_to_filepattern={split: paths})
