"""Records and readers: validation with file:line errors."""

import json

import pytest

from orca_jax.data import readers
from orca_jax.errors import DataError

GOOD = {
    "id": "t.1",
    "system_prompt": "",
    "question": "What is 1 + 2?",
    "response": "1+2=3, write 3. So the answer is 3.",
}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_reads_valid_lines_and_skips_blank_ones(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD), "", json.dumps({**GOOD, "id": "t.2"})])
    rows = readers.read_records(path)
    assert [r.id for r in rows] == ["t.1", "t.2"]
    assert rows[0].response == GOOD["response"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "a.jsonl:2: not valid JSON"),
        ("[1, 2]", "a.jsonl:2: expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "response"}), "a.jsonl:2: response: missing"),
        (json.dumps({**GOOD, "question": 7}), "a.jsonl:2: question: expected a string"),
        (json.dumps({**GOOD, "response": "  "}), "a.jsonl:2: response: empty"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, line, message):
    path = write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(DataError) as e:
        readers.read_records(path)
    assert message in str(e.value)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match="a.jsonl:2: not valid UTF-8"):
        readers.read_records(str(path))


def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        readers.resolve_files(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="no such data file"):
        readers.resolve_files(str(tmp_path / "*.jsonl"))


def test_globs_and_comma_lists_expand_in_order(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD)])
    b = write_lines(tmp_path / "b.jsonl", [json.dumps(GOOD)])
    assert readers.resolve_files(str(tmp_path / "*.jsonl")) == [a, b]
    assert readers.resolve_files(f"{b},{a}") == [b, a]
