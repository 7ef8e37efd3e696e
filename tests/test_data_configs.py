"""Every data config in configs/data/ parses, registers its SeqIO tasks or mixture, and streams batches;
the hash-based held-out split is disjoint from training and stable."""

import json
import os

import gin
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orca_jax.cli import gin_flags
from orca_jax.data.config import DataConfig, FileSet
from orca_jax.data.pipeline import host_batches
from orca_jax.data.records import OrcaRecord, write_jsonl

N = 300


def orca_rows(tag):
    return [OrcaRecord(f"niv.{tag}{i}", "", f"Question {tag}{i}?", f"Answer {tag}{i}.") for i in range(N)]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    for name, tag in (("1M-GPT4-Augmented.parquet", "g4_"), ("3_5M-GPT3_5-Augmented.parquet", "g35_")):
        rows = [{"id": r.id, "system_prompt": r.system_prompt, "question": r.question, "response": r.response}
                for r in orca_rows(tag)]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows), str(root / name), row_group_size=100)
    with open(root / "slim.jsonl", "w") as f:
        for r in orca_rows("slim_"):
            f.write(json.dumps({"conversations": [{"from": "human", "value": r.question},
                                                  {"from": "gpt", "value": r.response}]}) + "\n")  # fmt: skip
    write_jsonl(str(root / "mine.jsonl"), orca_rows("mine_"))
    return root


def load_data_config(name, macros):
    def data(config):
        return config

    configured = gin_flags.register(
        {"DataConfig": DataConfig, "FileSet": FileSet, "path_join": gin_flags.path_join, "data_of": data}
    )["data_of"]
    gin.clear_config()
    gin.parse_config_file(os.path.join(gin_flags.CONFIGS_DIR, "data", f"{name}.gin"))
    gin.parse_config([f"{k} = {gin_flags.gin_value(str(v))}" for k, v in macros.items()])
    gin.parse_config("data_of.config = %DATA")
    config = configured()
    gin.clear_config()
    return config


def responses(config, split):
    vocab = config.make_vocabulary()
    out = []
    for batch in host_batches(config, split, 8, shuffle=False, seed=None, num_epochs=1):
        for r in range(batch["decoder_target_tokens"].shape[0]):
            seg = batch["decoder_segment_ids"][r]
            for s in range(1, seg.max() + 1):
                t, w = batch["decoder_target_tokens"][r][seg == s], batch["decoder_loss_weights"][r][seg == s]
                out.append(vocab.decode(t[w == 1].tolist()))
    return out


@pytest.mark.parametrize(
    "name, macros, tag",
    [
        ("openorca_gpt4", {}, "g4_"),
        ("openorca_gpt35", {}, "g35_"),
        ("slimorca", {"SLIMORCA_FILES": "{root}/slim.jsonl"}, "slim_"),
        ("user_files", {"TRAIN_FILES": "{root}/mine.jsonl"}, "mine_"),
    ],
)
def test_data_config_streams_train_and_held_out_splits(name, macros, tag, data_root, sentencepiece_model):
    values = {"OPENORCA_DIR": str(data_root), "TOKENIZER": sentencepiece_model, **macros}
    config = load_data_config(name, {k: v.format(root=data_root) for k, v in values.items()})
    config = DataConfig.from_dict({**config.to_dict(), "sequence_length": 128})
    train, held_out = responses(config, "train"), responses(config, "validation")
    assert held_out and not set(train) & set(held_out)
    assert sorted(train + held_out) == sorted(f"Answer {tag}{i}." for i in range(N))
    assert 0 < len(held_out) < 0.05 * N
    assert responses(config, "validation") == held_out  # the same records every time


def test_progressive_stage_mixture(data_root, sentencepiece_model):
    config = load_data_config("orca_progressive", {
        "OPENORCA_DIR": str(data_root), "TOKENIZER": sentencepiece_model, "EXTRA_FILES": f"{data_root}/mine.jsonl",
        "EXTRA_RATE": 1.0, "STAGE_FILE": "1M-GPT4-Augmented.parquet", "STAGE_NAME": "orca_stage2",
    })  # fmt: skip
    assert config.task_name == "orca_stage2" and [s.name for s in config.sources] == ["openorca_stage", "extra_stage"]
    config = DataConfig.from_dict({**config.to_dict(), "sequence_length": 128})
    batches = host_batches(config, "train", 16, shuffle=True, seed=0, num_epochs=None)
    seen = set()
    for _ in range(4):
        batch = next(batches)
        vocab = config.make_vocabulary()
        seen |= {vocab.decode(row.tolist()).split("Answer ")[-1][:3] for row in batch["decoder_target_tokens"]}
    assert {"g4_", "min"} <= seen
