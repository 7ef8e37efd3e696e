"""Explanation-tuning records, and the check that turns one raw line, row or example into a record.

A record is the triple Orca trains on, plus where it came from:

    OrcaRecord(id="niv.242684", system_prompt="You are ...", question="...", response="...", collection="")

Two record formats (the file types that carry them are readers.py's business):

    openorca   OpenOrca's columns: {"id", "question", "response"} (+ optional "system_prompt" and
               "collection"; a missing "id" is the record's place). JSONL lines, parquet rows, or
               TFRecord tf.train.Example with those bytes features.
    sharegpt   SlimOrca's layout: {"conversations": [{"from": "system", "value": ...},
               {"from": "human", ...}, {"from": "gpt", ...}]} (+ optional "id"), JSONL only. One
               exchange per record; "user"/"assistant" are accepted for human/gpt.

A missing (or null) system message is the empty one: the run's system-message policy decides what
the record is trained with (`keep`: none, `orca`: Orca's per-collection message, `erase`: the
generic one; see system_messages.py). A missing id is the record's place in its file (as for
ShareGPT). So a plain `{"question", "response"}` file is valid.

One UTF-8 policy everywhere: text arrives as bytes (a JSONL line, a TFRecord bytes feature, a
parquet binary column) and is decoded strictly; a failure rejects the record as `not_utf8`.
Every record is checked: valid UTF-8 and JSON, the required fields present with string values, a
non-empty question and response, no field over MAX_FIELD_CHARS. A failure is a `Rejection` with a
reason code (counted per reason; REJECT_REASONS numbers them) and a message `file:line: field: reason`.
These functions are the only parsers: `orca-data validate`, `orca-data stats`, the trainer's start-up
check and the tf.data input pipeline all call them, so a file reads the same everywhere.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import tensorflow as tf
from google.protobuf.message import DecodeError

FORMATS = ("openorca", "sharegpt")
FIELDS = ("id", "system_prompt", "question", "response")  # OpenOrca's columns
REQUIRED = ("id", "question", "response")
TEXT_FIELDS = (*FIELDS, "collection")  # every field a record keeps
MAX_FIELD_CHARS = 1_000_000  # a field longer than this is a corrupt line, not a record
REASONS = ("not_utf8", "not_json", "not_object", "missing_field", "wrong_type", "empty_field", "field_too_long",
           "bad_conversation")  # fmt: skip
# Every reason an example can be dropped for: the record's own, then the pipeline's (after
# tokenization). In the tf.data pipeline a reason travels as its index here + 1 (0: kept).
REJECT_REASONS = (*REASONS, "over_length")


def reason_code(reason: str) -> int:
    return REJECT_REASONS.index(reason) + 1


@dataclasses.dataclass(frozen=True)
class OrcaRecord:
    id: str
    system_prompt: str  # "" when the record has none
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
    reason: str  # one of REJECT_REASONS
    field: str
    detail: str

    def message(self, where: str) -> str:
        return f"{where}: {self.field}: {self.detail}" if self.field else f"{where}: {self.detail}"


def _decode(raw: bytes, field: str) -> str | Rejection:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejection("not_utf8", field, f"not valid UTF-8 ({e.reason} at byte {e.start})")


def _check_fields(values: dict, required: Sequence[str]) -> dict | Rejection:
    """The record's text fields (optional ones that are missing or null as ""), or why it has none."""
    out = {}
    for field in TEXT_FIELDS:
        value = values.get(field)
        if value is None:
            if field in required:
                return Rejection("missing_field", field, f"missing (each record needs {', '.join(required)})")
            value = ""
        if isinstance(value, bytes):
            value = _decode(value, field)
            if isinstance(value, Rejection):
                return value
        if not isinstance(value, str):
            return Rejection("wrong_type", field, f"expected a string, got {type(value).__name__}")
        if len(value) > MAX_FIELD_CHARS:
            return Rejection("field_too_long", field, f"{len(value)} characters, over the limit of {MAX_FIELD_CHARS}")
        out[field] = value
    for field in ("question", "response"):
        if not out[field].strip():
            return Rejection("empty_field", field, "empty")
    return out


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
    checked = _check_fields(values, REQUIRED)
    return checked if isinstance(checked, Rejection) else OrcaRecord(**checked)


def record_from_object(obj, fmt: str, fallback_id: str) -> OrcaRecord | Rejection:
    """A parsed JSON value, a parquet row or a TFRecord's features as a record, or why it is not one."""
    if not isinstance(obj, dict):
        return Rejection("not_object", "", f"expected a JSON object, got {type(obj).__name__}")
    if fmt == "sharegpt":
        return _from_sharegpt(obj, fallback_id)
    if obj.get("id") is None:  # a plain {question, response} file: the record's place is its id
        obj = {**obj, "id": fallback_id}
    checked = _check_fields(obj, REQUIRED)
    return checked if isinstance(checked, Rejection) else OrcaRecord(**checked)


def record_from_line(raw: bytes, fmt: str, fallback_id: str) -> OrcaRecord | Rejection:
    """One JSONL line (bytes) as a record, or why it is not one."""
    text = _decode(raw, "")
    if isinstance(text, Rejection):
        return text
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return Rejection("not_json", "", f"not valid JSON ({e.msg} at column {e.colno})")
    return record_from_object(obj, fmt, fallback_id)


def record_from_example(raw: bytes, fmt: str, fallback_id: str) -> OrcaRecord | Rejection:
    """One serialized tf.train.Example (a TFRecord entry) as a record, or why it is not one. Each
    field is a bytes feature holding one value; features with other names are ignored."""
    try:
        example = tf.train.Example.FromString(raw)
    except DecodeError:
        return Rejection("not_object", "", "not a serialized tf.train.Example")
    obj = {}
    features = example.features.feature
    for name in TEXT_FIELDS:
        if name not in features:
            continue
        kind = features[name].WhichOneof("kind")
        values = features[name].bytes_list.value
        if kind != "bytes_list" or len(values) != 1:
            got = f"{len(values)} bytes values" if kind == "bytes_list" else (kind or "an empty feature")
            return Rejection("wrong_type", name, f"expected one bytes value, got {got}")
        obj[name] = values[0]
    return record_from_object(obj, fmt, fallback_id)


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
