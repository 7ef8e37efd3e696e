"""The data pipeline from files to packed batches: formats, validation policies, system messages,
templates, vocabularies, mixtures, host sharding and exact resume."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orca_jax.data import records, system_messages
from orca_jax.data.config import DataConfig, FileSet
from orca_jax.data.pipeline import host_batches
from orca_jax.data.records import REJECT_REASONS, OrcaRecord
from orca_jax.data.templates import TEMPLATES, get_template
from orca_jax.data.validation import validate_files
from orca_jax.data.vocab import ID_OFFSET, AddedTokensVocabulary, ByteVocabulary, make_vocabulary
from orca_jax.errors import ConfigError, DataError

RECORDS = [
    OrcaRecord(
        f"niv.{i}", "Be brief." if i % 2 else "", f"What is {i} + {i}?", f"{i}+{i}={2 * i}. So the answer is {2 * i}."
    )
    for i in range(40)
]


def write_all_formats(tmp_path):
    paths = {"jsonl": str(tmp_path / "r.jsonl"), "parquet": str(tmp_path / "r.parquet"),
             "tfrecord": str(tmp_path / "r.tfrecord")}  # fmt: skip
    records.write_jsonl(paths["jsonl"], RECORDS)
    table = pa.Table.from_pylist([{f: getattr(r, f) for f in records.FIELDS} for r in RECORDS])
    pq.write_table(table, paths["parquet"], row_group_size=16)  # three row groups
    records.write_tfrecord(paths["tfrecord"], RECORDS)
    sharegpt = tmp_path / "r.sharegpt.jsonl"
    with open(sharegpt, "w") as f:
        for r in RECORDS:
            turns = ([{"from": "system", "value": r.system_prompt}] if r.system_prompt else []) + [
                {"from": "human", "value": r.question}, {"from": "gpt", "value": r.response}]  # fmt: skip
            f.write(json.dumps({"id": r.id, "conversations": turns}) + "\n")
    paths["sharegpt"] = str(sharegpt)
    return paths


def decoded_examples(config, split="train", rows=8, pack=False):
    """Every example of one epoch, decoded back to (prompt text, response text) per segment."""
    vocab = config.make_vocabulary()
    out = []
    for batch in host_batches(config, split, rows, shuffle=False, seed=None, num_epochs=1, pack=pack):
        for r in range(batch["decoder_target_tokens"].shape[0]):
            seg = batch["decoder_segment_ids"][r]
            for s in range(1, seg.max() + 1):
                tokens = batch["decoder_target_tokens"][r][seg == s]
                weights = batch["decoder_loss_weights"][r][seg == s]
                out.append((vocab.decode(tokens[weights == 0].tolist()), vocab.decode(tokens[weights == 1].tolist())))
    return out


def test_every_file_format_yields_the_same_examples(tmp_path):
    paths = write_all_formats(tmp_path)
    results = {}
    for kind, path in paths.items():
        fmt = "sharegpt" if kind == "sharegpt" else "openorca"
        config = DataConfig(sources=(FileSet(f"fmt_{kind}", train=path, format=fmt),), sequence_length=128)
        results[kind] = decoded_examples(config)
    template = get_template("orca")
    expected = [(template.prompt(r.system_prompt, r.question), r.response) for r in RECORDS]
    for kind, got in results.items():
        assert got == expected, kind


def test_skip_policy_counts_every_dropped_record(tmp_path):
    lines = [r.to_json() for r in RECORDS[:10]]
    lines[2] = "{broken"
    lines[5] = json.dumps({"id": "x", "system_prompt": "", "question": "q", "response": ""})
    lines[7] = json.dumps({**json.loads(lines[7]), "question": "long " * 100})  # over 128 bytes
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    config = DataConfig(sources=(FileSet("skip_test", train=str(path)),), sequence_length=128, policy="skip")
    totals = np.zeros(len(REJECT_REASONS), int)
    kept = 0
    for batch in host_batches(config, "train", 4, shuffle=False, seed=None, num_epochs=1):
        totals += batch["rejected"].sum(axis=0)
        kept += int((batch["decoder_segment_ids"].max(axis=1)).sum())
    counts = {r: int(n) for r, n in zip(REJECT_REASONS, totals, strict=True) if n}
    assert counts == {"not_json": 1, "empty_field": 1, "over_length": 1} and kept == 7
    rejects = tmp_path / "rejects.jsonl"
    assert validate_files(config, "train", str(rejects)) == {"ok": 8, "not_json": 1, "empty_field": 1}
    logged = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["where"].rsplit(":", 1)[1], r["reason"]) for r in logged] == [("3", "not_json"), ("6", "empty_field")]
    strict = DataConfig(sources=config.sources, sequence_length=128, policy="strict")
    with pytest.raises(DataError, match=r"mixed.jsonl:3: not valid JSON"):
        validate_files(strict, "train")


def test_trim_prompt_keeps_the_response(tmp_path):
    path = tmp_path / "long.jsonl"
    records.write_jsonl(str(path), [OrcaRecord("a", "s" * 200, "What?", "Because.")])
    config = DataConfig(sources=(FileSet("trim_test", train=str(path)),), sequence_length=64, overlong="trim_prompt")
    ((prompt, response),) = decoded_examples(config)
    assert response == "Because." and prompt.endswith("### User:\nWhat?\n\n### Response:\n")
    assert len(prompt.encode()) + len(response.encode()) + 1 == 64  # every slot used, EOS included


def test_sharegpt_rejects_multi_turn_and_accepts_user_assistant():
    ok = records.record_from_object({"conversations": [{"from": "user", "value": "q"}, {"from": "assistant",
                                     "value": "a"}]}, "sharegpt", "f:1")  # fmt: skip
    assert ok == OrcaRecord("f:1", "", "q", "a")
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}] * 2
    bad = records.record_from_object({"conversations": turns}, "sharegpt", "f:2")
    assert bad.reason == "bad_conversation" and "human, gpt, human, gpt" in bad.detail


def test_system_messages_follow_orcas_mapping_deterministically():
    for collection, allowed in system_messages.COLLECTIONS.items():
        chosen = {system_messages.orca_message(f"{collection}.{i}", "Options: A B") for i in range(300)}
        assert chosen == {system_messages.BEHAVIOURS[b] for b in allowed}
    plain = {system_messages.orca_message(f"flan.{i}", "What is it?") for i in range(300)}
    assert system_messages.BEHAVIOURS[8] not in plain and system_messages.BEHAVIOURS[10] not in plain
    assert system_messages.orca_message("t0.7", "q") == system_messages.orca_message("t0.7", "q")
    assert system_messages.system_message("cot.1", "q", "Mine.", mode="orca") == "Mine."
    assert system_messages.system_message("cot.1", "q", "", mode="keep") == ""
    assert system_messages.system_message("cot.1", "q", "", mode="orca") in {
        system_messages.BEHAVIOURS[b] for b in system_messages.COLLECTIONS["cot"]}  # fmt: skip
    assert system_messages.system_message("cot.1", "q", "Mine.", mode="erase") == system_messages.GENERIC_MESSAGE


def test_system_messages_from_a_user_file(tmp_path):
    path = tmp_path / "messages.json"
    path.write_text(json.dumps({str(b): f"message {b}" for b in range(1, 17)}))
    messages = system_messages.read_messages_file(str(path))
    assert system_messages.orca_message("cot.3", "q", messages=messages) in {"message 6", "message 11", "message 16"}
    path.write_text(json.dumps({"1": ""}))
    with pytest.raises(ConfigError, match=r"behaviours \[2, 3"):
        system_messages.read_messages_file(str(path))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_weights_response_suffix_and_eos_only(name, tmp_path):
    path = tmp_path / "t.jsonl"
    records.write_jsonl(str(path), [OrcaRecord("a", "Be brief.", "What is 2 + 3?", "5.")])
    config = DataConfig(sources=(FileSet(f"tpl_{name}", train=str(path)),), template=name, sequence_length=256)
    vocab = config.make_vocabulary()
    (batch,) = list(host_batches(config, "train", 1, shuffle=False, seed=None, num_epochs=1))
    weighted = batch["decoder_target_tokens"][0][batch["decoder_loss_weights"][0] == 1].tolist()
    template = get_template(name)
    assert weighted == vocab.encode(template.response("5.")) + [vocab.eos_id]
    prompt = batch["decoder_target_tokens"][0][
        (batch["decoder_loss_weights"][0] == 0) & (batch["decoder_segment_ids"][0] > 0)
    ]
    assert vocab.decode(prompt.tolist()) == template.prompt("Be brief.", "What is 2 + 3?")


def test_sentencepiece_and_added_tokens(sentencepiece_model):
    vocab = make_vocabulary(sentencepiece_model)
    ids = vocab.encode("Orca explains 1673.")
    assert 0 not in ids and (vocab.bos_id, vocab.eos_id, vocab.vocab_size) == (1, 2, 32000)
    assert vocab.decode(ids) == "Orca explains 1673."
    chatml = make_vocabulary(sentencepiece_model, ("<pad>", "<|im_start|>", "<|im_end|>"))
    assert isinstance(chatml, AddedTokensVocabulary) and chatml.vocab_size == 32003
    marked = chatml.encode("<|im_start|>user\nhi<|im_end|>")
    assert marked[0] == 32001 and marked[-1] == 32002 and chatml.decode(marked) == "<|im_start|>user\nhi<|im_end|>"


def test_tokenizer_json_ids_are_shifted_so_zero_stays_padding(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["!", "<|begin_of_text|>", "<|eot_id|>", "hello", "world", "[UNK]"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    vocab = make_vocabulary(str(tmp_path / "tokenizer.json"))
    assert vocab.encode("! hello world") == [0 + ID_OFFSET, 3 + ID_OFFSET, 4 + ID_OFFSET]
    assert (vocab.bos_id, vocab.eos_id, vocab.vocab_size) == (1 + ID_OFFSET, 2 + ID_OFFSET, len(words) + ID_OFFSET)
    assert vocab.decode(vocab.encode("hello world")) == "hello world"
    assert ByteVocabulary().encode("!") == [ord("!") + 4]


def test_mixture_draws_from_every_source(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    records.write_jsonl(str(a), [OrcaRecord(f"a{i}", "", f"A question {i}?", "A answer.") for i in range(50)])
    records.write_jsonl(str(b), [OrcaRecord(f"b{i}", "", f"B question {i}?", "B answer.") for i in range(50)])
    config = DataConfig(sources=(FileSet("mix_a", train=str(a), rate=3.0), FileSet("mix_b", train=str(b), rate=1.0)),
                        name="mix_ab", sequence_length=128)  # fmt: skip
    batches = host_batches(config, "train", 8, shuffle=True, seed=1, num_epochs=None)
    answers = [r for _ in range(10) for r in _responses(next(batches), config)]
    share_a = sum(r == "A answer." for r in answers) / len(answers)
    assert 0.6 < share_a < 0.9  # rate 3 : 1


def _responses(batch, config):
    vocab = config.make_vocabulary()
    out = []
    for r in range(batch["decoder_target_tokens"].shape[0]):
        seg = batch["decoder_segment_ids"][r]
        for s in range(1, seg.max() + 1):
            t, w = batch["decoder_target_tokens"][r][seg == s], batch["decoder_loss_weights"][r][seg == s]
            out.append(vocab.decode(t[w == 1].tolist()))
    return out


def test_hosts_read_disjoint_shards_that_cover_everything(tmp_path):
    path = tmp_path / "r.jsonl"
    records.write_jsonl(str(path), RECORDS)
    config = DataConfig(sources=(FileSet("shard_test", train=str(path)),), sequence_length=128)
    shards = []
    for host in range(2):
        batches = host_batches(config, "train", 4, shuffle=False, seed=None, num_epochs=1, shard_index=host,
                               num_shards=2, pack=False)  # fmt: skip
        shards.append({p for b in batches for p in _responses(b, config)})
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == len(RECORDS)


def test_iterator_state_resumes_without_repeating_or_skipping(tmp_path):
    path = tmp_path / "r.jsonl"
    records.write_jsonl(str(path), RECORDS)
    config = DataConfig(sources=(FileSet("resume_test", train=str(path)),), sequence_length=128, pack_window=7)

    def stream():
        return host_batches(config, "train", 4, shuffle=True, seed=3, num_epochs=None)

    straight = stream()
    want = [_responses(next(straight), config) for _ in range(12)]
    first = stream()
    got = [_responses(next(first), config) for _ in range(5)]
    first.save(str(tmp_path / "state" / "iterator"))
    second = stream()
    second.restore(str(tmp_path / "state" / "iterator"))
    got += [_responses(next(second), config) for _ in range(7)]
    assert got == want


def test_tfds_builder_splits_by_id_hash_and_feeds_the_pipeline(tmp_path):
    import tensorflow_datasets as tfds

    from orca_jax.data.tfds_builder import OrcaRecords, is_validation

    manual = tmp_path / "manual"
    manual.mkdir()
    rows = [OrcaRecord(f"niv.{i}", "", f"Question {i}?", f"Answer {i}.") for i in range(400)]
    records.write_jsonl(str(manual / "part1.jsonl"), rows[:250])
    (manual / "part2.jsonl").write_text("\n".join([r.to_json() for r in rows[250:]] + ["{bad"]) + "\n")
    builder = OrcaRecords(config="openorca", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    held_out = {r.response for r in rows if is_validation(r.id)}
    assert 0 < len(held_out) < 20
    assert builder.info.splits["train"].num_examples + builder.info.splits["validation"].num_examples == 400

    source = FileSet("tfds_test", train="tfds:orca_records/openorca", tfds_data_dir=str(tmp_path / "tfds"))
    config = DataConfig(sources=(source,), sequence_length=128)
    train = {r for _, r in decoded_examples(config, "train")}
    validation = {r for _, r in decoded_examples(config, "validation")}
    assert validation == held_out and train == {r.response for r in rows} - held_out


def test_orca_data_stats_and_validate(tmp_path, capsys):
    from orca_jax.cli.data import main

    path = tmp_path / "r.jsonl"
    records.write_jsonl(str(path), RECORDS)
    main(["stats", "--input", str(path), "--vocab", "byte", "--seq_len", "128", "--json",
          "--histogram", str(tmp_path / "h.png")])  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["records"] == 40 and report["rows"] > 0
    assert report["examples_per_row"] == pytest.approx(40 / report["rows"], abs=1e-3)
    assert 0 < report["non_pad_fraction"] <= 1 and (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    main(["validate", str(path)])
    assert "40 valid, 0 rejected" in capsys.readouterr().out
    with open(path, "a") as f:
        f.write('{"id": 3}\n')
    with pytest.raises(SystemExit) as e:
        main(["validate", str(path), "--rejects", str(tmp_path / "rejects.jsonl")])
    assert e.value.code == 2
    assert "40 valid, 1 rejected" in capsys.readouterr().out
    assert json.loads((tmp_path / "rejects.jsonl").read_text())["where"].endswith("r.jsonl:41")
