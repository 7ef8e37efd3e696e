"""One reader for every consumer: a malformed file per format gives the same per-line reasons from
`orca-data validate`, the trainer's start-up check (policy `skip`) and `orca-data stats`, and the
same per-reason counts in the packed rows' `rejected` feature; records without a system message
validate and train."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from orca_jax.cli.data import main as data_main
from orca_jax.data import readers, stats
from orca_jax.data.config import DataConfig, FileSet
from orca_jax.data.pipeline import host_batches, rejected_counts
from orca_jax.data.records import REJECT_REASONS, Rejection
from orca_jax.data.templates import get_template
from orca_jax.data.validation import validate, validate_files

SEQ_LEN = 128
TOO_LONG = "x" * 1_000_001  # over records.MAX_FIELD_CHARS
LONG_ANSWER = "long " * 40  # a valid record, but over SEQ_LEN bytes once templated: over_length
VALID = [{"id": f"ok.{i}", "question": f"What is {i} + 1?", "response": f"{i + 1}."} for i in range(6)]


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def openorca_jsonl(path):
    lines = (
        [_json(v) for v in VALID[:3]]
        + [
            b'{"id": "u", "question": "caf\xe9?", "response": "r"}',  # Latin-1, not UTF-8
            b"{broken",
            b"[1, 2]",
            _json({"id": "m", "question": "q"}),
            _json({"id": "t", "question": 7, "response": "r"}),
            _json({"id": "e", "question": "q", "response": "  "}),
            _json({"id": "l", "question": "q", "response": TOO_LONG}),
            b"",  # blank: skipped, still counted in line numbers
            b" \t\r",  # whitespace only: blank too
            _json({"id": "n", "system_prompt": None, "question": "q?", "response": "a."}),  # null: no message
            _json({"id": "o", "question": "q", "response": LONG_ANSWER}),
        ]
        + [_json(v) for v in VALID[3:]]
    )
    path.write_bytes(b"\n".join(lines) + b"\n")
    reasons = {"not_utf8", "not_json", "not_object", "missing_field", "wrong_type", "empty_field", "field_too_long"}
    return reasons, len(VALID) + 2  # valid records: with the null system message and the over-long one


def sharegpt_jsonl(path):
    def convo(q, a):
        return {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}

    lines = [_json(convo(v["question"], v["response"])) for v in VALID] + [
        _json({"conversations": [{"from": "human", "value": "q"}] * 2}),
        _json({"turns": []}),
        b"\xff",
        _json(convo("q", LONG_ANSWER)),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {"bad_conversation", "missing_field", "not_utf8"}, len(VALID) + 1


def _example(fields: dict) -> bytes:
    def feature(value):
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value if isinstance(value, bytes) else
                                                                     value.encode()]))  # fmt: skip

    features = tf.train.Features(feature={k: feature(v) for k, v in fields.items()})
    return tf.train.Example(features=features).SerializeToString()


def openorca_tfrecord(path):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for raw in [_example(v) for v in VALID[:3]] + [
            _example({"id": "u", "question": b"caf\xe9?", "response": "r"}),
            b"\xff\xff not a tf.train.Example",
            _example({"id": "m", "question": "q"}),
            _example({"id": "t", "question": 7, "response": "r"}),
            _example({"id": "e", "question": "q", "response": " "}),
            _example({"id": "l", "question": "q", "response": TOO_LONG}),
            _example({"id": "o", "question": "q", "response": LONG_ANSWER}),
        ] + [_example(v) for v in VALID[3:]]:  # fmt: skip
            writer.write(raw)
    return {"not_utf8", "not_object", "missing_field", "wrong_type", "empty_field", "field_too_long"}, len(VALID) + 1


def openorca_parquet(path):
    rows = (
        VALID[:3]
        + [
            {"id": "u", "question": b"caf\xe9?", "response": "r"},
            {"id": "m", "question": "q", "response": None},
            {"id": "e", "question": "q", "response": " "},
            {"id": "l", "question": "q", "response": TOO_LONG},
            {"id": "o", "question": "q", "response": LONG_ANSWER},
        ]
        + VALID[3:]
    )
    as_bytes = [{k: v.encode() if isinstance(v, str) else v for k, v in r.items()} for r in rows]
    schema = pa.schema([(k, pa.binary()) for k in ("id", "system_prompt", "question", "response")])
    pq.write_table(pa.Table.from_pylist(as_bytes, schema=schema), str(path), row_group_size=3)  # 4 row groups
    return {"not_utf8", "missing_field", "empty_field", "field_too_long"}, len(VALID) + 1


CASES = {
    "jsonl": ("bad.jsonl", "openorca", openorca_jsonl),
    "sharegpt": ("bad.sharegpt.jsonl", "sharegpt", sharegpt_jsonl),
    "tfrecord": ("bad.tfrecord", "openorca", openorca_tfrecord),
    "parquet": ("bad.parquet", "openorca", openorca_parquet),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_reader_gives_the_same_rejects(case, tmp_path, capsys):
    name, fmt, write = CASES[case]
    path = str(tmp_path / name)
    expected, valid = write(tmp_path / name)

    with pytest.raises(SystemExit) as e:  # orca-data validate --rejects
        data_main(["validate", path, "--format", fmt, "--rejects", str(tmp_path / "cli.jsonl")])
    assert e.value.code == 2 and f"{valid} valid, {len(expected)} rejected" in capsys.readouterr().out
    from_cli = [json.loads(line) for line in (tmp_path / "cli.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in from_cli} == expected
    assert all(r["where"].startswith(path + ":") for r in from_cli)

    config = DataConfig(sources=(FileSet(f"parity_{case}", train=path, format=fmt),), sequence_length=SEQ_LEN,
                        policy="skip")  # fmt: skip
    counts = validate_files(config, "train", str(tmp_path / "skip.jsonl"))  # what the trainer's check_data runs
    from_skip = [json.loads(line) for line in (tmp_path / "skip.jsonl").read_text().splitlines()]
    assert from_skip == from_cli
    assert counts == Counter(ok=valid) + Counter(r["reason"] for r in from_cli)

    totals, kept = np.zeros(len(REJECT_REASONS), np.int64), 0
    for batch in host_batches(config, "train", 4, shuffle=False, seed=None, num_epochs=1):
        totals += batch["rejected"].sum(axis=0)
        kept += int(batch["decoder_segment_ids"].max(axis=1).sum())
    want = Counter(r["reason"] for r in from_cli) + Counter(over_length=1)
    assert rejected_counts(totals) == dict(want) and kept == valid - 1

    _, stats_rejected, lengths = stats.example_lengths(config)  # orca-data stats
    assert dict(stats_rejected) == dict(want) and len(lengths) == valid - 1


def test_non_utf8_tfrecord_text_is_rejected_not_replaced(tmp_path):
    path = str(tmp_path / "latin1.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(_example({"id": "a", "question": b"caf\xe9?", "response": "Yes."}))
        writer.write(_example({"id": "b", "question": "Tea?", "response": "No."}))
    ((where, rejection), (_, record)) = readers.scan_file(path, "openorca")
    assert isinstance(rejection, Rejection) and rejection.message(where) == (
        f"{path}:1: question: not valid UTF-8 (invalid continuation byte at byte 3)"
    )
    assert record.question == "Tea?"
    config = DataConfig(sources=(FileSet("latin1", train=path),), sequence_length=SEQ_LEN, policy="skip")
    (batch,) = list(host_batches(config, "train", 2, shuffle=False, seed=None, num_epochs=1, pack=False))
    text = config.make_vocabulary().decode(batch["decoder_target_tokens"][batch["decoder_segment_ids"] > 0].tolist())
    assert rejected_counts(batch["rejected"].sum(axis=0)) == {"not_utf8": 1}
    assert "Tea?" in text and "caf" not in text and "\ufffd" not in text
    strict = DataConfig(sources=config.sources, sequence_length=SEQ_LEN)
    with pytest.raises(Exception, match=r"latin1.tfrecord:1: question: not valid UTF-8"):
        validate_files(strict, "train")


def test_records_without_a_system_message_get_the_runs_policy(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in VALID))
    assert validate([str(path)], log=lambda line: None) == Counter(valid=len(VALID))
    for mode in ("keep", "orca"):
        config = DataConfig(sources=(FileSet(f"plain_{mode}", train=str(path)),), sequence_length=512,
                            system_messages=mode)  # fmt: skip
        assert validate_files(config, "train") == Counter(ok=len(VALID))  # strict
        vocab, template = config.make_vocabulary(), get_template("orca")
        (batch,) = list(host_batches(config, "train", 8, shuffle=False, seed=None, num_epochs=1, pack=False))
        prompts = [vocab.decode(t[(w == 0) & (s > 0)].tolist()) for t, w, s in
                   zip(batch["decoder_target_tokens"], batch["decoder_loss_weights"], batch["decoder_segment_ids"],
                       strict=True) if s.any()]  # fmt: skip
        records = readers.read_records(str(path))
        assert prompts == [template.prompt(config.system_message(r, None), r.question) for r in records]
        assert all(r.system_prompt == "" for r in records)
        assert mode == "keep" or all(config.system_message(r, None) for r in records)  # orca: one is attached


def test_a_skip_run_leaves_the_same_rejects_as_orca_data_validate(tmp_path, capsys):
    from orca_jax.model.config import ModelConfig
    from orca_jax.training.optimizer import OptimizerConfig
    from orca_jax.training.trainer import TrainConfig, train

    path = str(tmp_path / "bad.jsonl")
    openorca_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(SystemExit):
        data_main(["validate", path, "--rejects", str(tmp_path / "cli.jsonl")])
    model = ModelConfig(vocab_size=260, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64,
                        dtype="float32")  # fmt: skip
    data = DataConfig(sources=(FileSet("skip_run", train=path),), sequence_length=SEQ_LEN, policy="skip")
    run = tmp_path / "run"
    metrics = train(str(run), model, data, OptimizerConfig(warmup_steps=1), train_config=TrainConfig(
        num_steps=2, batch_size=8, log_every=1, checkpoint_every=2))  # fmt: skip
    assert np.isfinite(metrics["loss"])
    assert (run / "rejects.jsonl").read_text() == (tmp_path / "cli.jsonl").read_text()
    report = json.loads((run / "data_report.json").read_text())
    cli = Counter(json.loads(line)["reason"] for line in (tmp_path / "cli.jsonl").read_text().splitlines())
    assert report["records"] == {"ok": len(VALID) + 2, **cli}


def test_dropped_record_counts_are_host_side_and_survive_a_restart(tmp_path):
    """The trainer counts dropped records on the host; a run stopped and resumed reports the same
    counts as one that ran straight through (the checkpoint carries them)."""
    from orca_jax.model.config import ModelConfig
    from orca_jax.training.optimizer import OptimizerConfig
    from orca_jax.training.trainer import TrainConfig, train

    path = str(tmp_path / "bad.jsonl")
    openorca_jsonl(tmp_path / "bad.jsonl")
    model = ModelConfig(vocab_size=260, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64,
                        dtype="float32")  # fmt: skip
    data = DataConfig(sources=(FileSet("restart", train=path),), sequence_length=SEQ_LEN, policy="skip")

    def run(model_dir, steps):
        config = TrainConfig(num_steps=steps, batch_size=8, log_every=2, checkpoint_every=2)
        out = train(str(tmp_path / model_dir), model, data, OptimizerConfig(warmup_steps=1), train_config=config)
        return {k: v for k, v in out.items() if k.startswith("data/rejected_")}

    straight = run("straight", 6)
    assert straight and all(v > 0 for v in straight.values())
    # The tiny file's rejects reach the packed rows while the shuffle buffer fills (by step 4 here):
    # stopping after that and resuming must not forget them.
    assert run("split", 4) == straight
    assert run("split", 6) == straight
