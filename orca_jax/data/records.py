"""Explanation-tuning records, the files that hold them, and the validation of every record.

A record is the triple Orca trains on, plus where it came from:

    OrcaRecord(id="niv.242684", system_prompt="You are ...", question="...", response="...", collection="")

Two record formats, in three file types (chosen by extension; local paths, globs, or gs://):

    openorca   OpenOrca's columns: {"id", "system_prompt", "question", "response"} (+ optional
               "collection"). JSONL (.jsonl, .json), parquet (.parquet), or TFRecord of tf.train.Example
               with those bytes features (.tfrecord, .tfrecord-00000-of-00004, ...).
    sharegpt   SlimOrca's layout: {"conversations": [{"from": "system", "value": ...},
               {"from": "human", ...}, {"from": "gpt", ...}]} (+ optional "id"), JSONL only. One
               exchange per record; "user"/"assistant" are accepted for human/gpt.

Every record is checked: valid UTF-8 and JSON, the fields present with string values, a non-empty
question and response, no field over MAX_FIELD_CHARS. A failure is a `Rejection` with a reason code
(counted per reason) and a message `file:line: field: reason`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence

import tensorflow as tf

from orca_jax.errors import DataError

FORMATS = ("openorca", "sharegpt")
FIELDS = ("id", "system_prompt", "question", "response")
MAX_FIELD_CHARS = 1_000_000  # a field longer than this is a corrupt line, not a record
REASONS = ("not_utf8", "not_json", "not_object", "missing_field", "wrong_type", "empty_field", "field_too_long",
           "bad_conversation")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class OrcaRecord:
    id: str
    system_prompt: str
    question: str
    response: str
    collection: str = ""

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        if not d["collection"]:
            del d["collection"]
        return json.dumps(d, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class Rejection:
    reason: str  # one of REASONS (or "over_length", decided after tokenization)
    field: str
    detail: str

    def message(self, where: str) -> str:
        return f"{where}: {self.field}: {self.detail}" if self.field else f"{where}: {self.detail}"


def _check_fields(values: dict, required: Sequence[str]) -> Rejection | None:
    for field in required:
        if field not in values:
            return Rejection("missing_field", field, f"missing (each record needs {', '.join(required)})")
        value = values[field]
        if not isinstance(value, str):
            return Rejection("wrong_type", field, f"expected a string, got {type(value).__name__}")
        if len(value) > MAX_FIELD_CHARS:
            return Rejection("field_too_long", field, f"{len(value)} characters, over the limit of {MAX_FIELD_CHARS}")
    for field in ("question", "response"):
        if field in values and not values[field].strip():
            return Rejection("empty_field", field, "empty")
    return None


def _from_sharegpt(obj: dict, fallback_id: str) -> OrcaRecord | Rejection:
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        return Rejection("missing_field", "conversations", "missing or not a list")
    roles = {"system": "system", "human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
    parsed = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in roles:
            return Rejection("bad_conversation", f"conversations[{i}]", 'needs "from" (system/human/gpt) and "value"')
        parsed.append((roles[turn["from"]], turn["value"]))
    system = parsed[0][1] if parsed and parsed[0][0] == "system" else ""
    rest = [r for r in parsed if r[0] != "system"] if parsed and parsed[0][0] == "system" else parsed
    if [r for r, _ in rest] != ["human", "gpt"]:
        order = ", ".join(r for r, _ in parsed) or "nothing"
        return Rejection("bad_conversation", "conversations", f"expected [system,] human, gpt; got {order}")
    values = {"id": str(obj.get("id", fallback_id)), "system_prompt": system, "question": rest[0][1],
              "response": rest[1][1]}  # fmt: skip
    return _check_fields(values, FIELDS) or OrcaRecord(**values)


def record_from_object(obj, fmt: str, fallback_id: str) -> OrcaRecord | Rejection:
    """A parsed JSON value (or a row) as a record, or why it is not one."""
    if not isinstance(obj, dict):
        return Rejection("not_object", "", f"expected a JSON object, got {type(obj).__name__}")
    if fmt == "sharegpt":
        return _from_sharegpt(obj, fallback_id)
    rejection = _check_fields(obj, FIELDS)
    if rejection:
        return rejection
    collection = obj.get("collection") or ""
    if not isinstance(collection, str):
        return Rejection("wrong_type", "collection", f"expected a string, got {type(collection).__name__}")
    return OrcaRecord(obj["id"], obj["system_prompt"], obj["question"], obj["response"], collection)


def record_from_line(raw: bytes, fmt: str, fallback_id: str) -> OrcaRecord | Rejection:
    """One JSONL line (bytes) as a record, or why it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejection("not_utf8", "", f"not valid UTF-8 ({e.reason} at byte {e.start})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return Rejection("not_json", "", f"not valid JSON ({e.msg} at column {e.colno})")
    return record_from_object(obj, fmt, fallback_id)


# Files.


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


def scan_file(path: str, fmt: str) -> Iterator[tuple[str, OrcaRecord | Rejection]]:
    """(where, record or rejection) for every record of one file, in order; `where` is `file:line`
    for JSONL and `file:row` for parquet and TFRecord (1-based)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown record format {fmt!r}; choose one of {FORMATS}")
    kind = file_type(path)
    if fmt == "sharegpt" and kind != "jsonl":
        raise DataError(f"{path}: the sharegpt format is read from JSONL files only")
    try:
        if kind == "parquet":
            yield from _scan_parquet(path, fmt)
        elif kind == "tfrecord":
            yield from _scan_tfrecord(path, fmt)
        else:
            with tf.io.gfile.GFile(path, "rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    if raw.strip():
                        yield f"{path}:{lineno}", record_from_line(raw, fmt, f"{os.path.basename(path)}:{lineno}")
    except (OSError, tf.errors.OpError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'message', None) or e})") from None


def open_parquet(path: str):
    """A pyarrow ParquetFile for a local path or a URI (gs://, s3://) through pyarrow's filesystems."""
    import pyarrow.fs
    import pyarrow.parquet as pq

    if "://" in path:
        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        return pq.ParquetFile(fs.open_input_file(inner))
    return pq.ParquetFile(path)


def _scan_parquet(path: str, fmt: str):
    row = 0
    for batch in open_parquet(path).iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            yield f"{path}:{row}", record_from_object(obj, fmt, f"{os.path.basename(path)}:{row}")


def _scan_tfrecord(path: str, fmt: str):
    for row, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator(), start=1):
        example = tf.train.Example.FromString(raw)
        obj = {}
        for name, feature in example.features.feature.items():
            values = feature.bytes_list.value
            try:
                obj[name] = values[0].decode("utf-8") if len(values) == 1 else [v.decode("utf-8") for v in values]
            except UnicodeDecodeError as e:
                yield f"{path}:{row}", Rejection("not_utf8", name, f"not valid UTF-8 ({e.reason})")
                break
        else:
            yield f"{path}:{row}", record_from_object(obj, fmt, f"{os.path.basename(path)}:{row}")


def read_records(patterns: str | Sequence[str], fmt: str = "openorca") -> list[OrcaRecord]:
    """All records of all files, in order; the first bad one stops the read with `file:line: ...`."""
    out = []
    for path in resolve_files(patterns):
        for where, item in scan_file(path, fmt):
            if isinstance(item, Rejection):
                raise DataError(item.message(where))
            out.append(item)
    return out


def write_jsonl(path: str, records: Sequence[OrcaRecord]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_json() + "\n")


def write_tfrecord(path: str, records: Sequence[OrcaRecord]) -> None:
    """Records as tf.train.Example with one bytes feature per field (the TFRecord input format)."""
    with tf.io.TFRecordWriter(path) as writer:
        for r in records:
            feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8")]))
                       for k, v in dataclasses.asdict(r).items() if v or k != "collection"}  # fmt: skip
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
