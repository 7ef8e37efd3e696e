"""Records: validation with file:line errors, and the mini-Orca teacher."""

import json
import random

import pytest

from orca_jax.data import mini_orca, records
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
    rows = records.read_records(path)
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
        records.read_records(path)
    assert message in str(e.value)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match="a.jsonl:2: not valid UTF-8"):
        records.read_records(str(path))


def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        records.resolve_files(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="no such data file"):
        records.resolve_files(str(tmp_path / "*.jsonl"))


def test_globs_and_comma_lists_expand_in_order(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD)])
    b = write_lines(tmp_path / "b.jsonl", [json.dumps(GOOD)])
    assert records.resolve_files(str(tmp_path / "*.jsonl")) == [a, b]
    assert records.resolve_files(f"{b},{a}") == [b, a]


@pytest.mark.parametrize("a, b", [(677, 996), (5, 5), (999, 1), (120, 305), (0, 0)])
def test_teacher_explains_column_by_column(a, b):
    text = mini_orca.explain_addition(a, b)
    assert text.endswith(f"So the answer is {a + b}.")
    # Replaying the written digits and the last carry spells the answer.
    digits = [
        int(s.split("write ")[1][0]) for s in text.split(". ") if "write " in s and "carry" not in s.split("write ")[0]
    ]
    carry = text.split("Write the last carry ")[1][0] if "last carry" in text else ""
    assert int(carry + "".join(str(d) for d in reversed(digits))) == a + b


def test_teacher_example_from_the_issue():
    assert mini_orca.explain_addition(677, 996) == (
        "7+6=13, write 3 carry 1. 7+9+1=17, write 7 carry 1. 6+9+1=16, write 6 carry 1. "
        "Write the last carry 1. So the answer is 1673."
    )


def test_teacher_is_right_on_random_pairs():
    rng = random.Random(1)
    for _ in range(500):
        a, b = rng.randint(0, 99999), rng.randint(0, 99999)
        assert mini_orca.explain_addition(a, b).endswith(f"So the answer is {a + b}.")


def test_generate_mini_is_deterministic_and_heldout_is_unseen(tmp_path):
    p1 = mini_orca.write_mini_orca(str(tmp_path / "a"), num_train=300, num_heldout=40, families=["addition"], seed=7)
    p2 = mini_orca.write_mini_orca(str(tmp_path / "b"), num_train=300, num_heldout=40, families=["addition"], seed=7)
    p3 = mini_orca.write_mini_orca(str(tmp_path / "c"), num_train=300, num_heldout=40, families=["addition"], seed=8)
    for name in p1:
        assert open(p1[name]).read() == open(p2[name]).read()
    assert open(p1["train_strong"]).read() != open(p3["train_strong"]).read()

    train = records.read_records(p1["train_strong"])
    heldout = records.read_records(p1["heldout"])
    assert len(train) == 300 and len(heldout) == 40
    assert not {r.question for r in train} & {r.question for r in heldout}
    assert {r.system_prompt for r in train} <= set(mini_orca.SYSTEM_MESSAGES)
    bbh = json.load(open(p1["bbh/addition"]))["examples"]
    assert [ex["input"] for ex in bbh] == [r.question for r in heldout]
    for ex, r in zip(bbh, heldout, strict=True):
        assert r.response.endswith(f"So the answer is {ex['target']}.")
        a, b = map(int, ex["input"][len("What is ") : -1].split(" + "))
        assert int(ex["target"]) == a + b and 100 <= a <= 999 and 100 <= b <= 999
