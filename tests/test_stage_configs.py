"""Orca's two stages through their real run configs, shrunk to a tiny model: import a Hugging Face
model with Orca's pad token, stage 1 from it, stage 2 from stage 1's final checkpoint."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import transformers

from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir
from orca_jax.cli.import_hf import main as import_main
from orca_jax.cli.train import main as train_main

SHRINK = [
    "--gin.ModelConfig.d_model=32", "--gin.ModelConfig.num_layers=1", "--gin.ModelConfig.num_heads=2",
    "--gin.ModelConfig.num_kv_heads=2", "--gin.ModelConfig.mlp_dim=64", "--gin.ModelConfig.norm_eps=1e-6",
    "--gin.ModelConfig.dtype='float32'", "--gin.ModelConfig.attention='xla'", "--gin.DataConfig.sequence_length=128",
    "--gin.TrainConfig.batch_size=8", "--gin.TrainConfig.log_every=1", "--gin.TrainConfig.eval_every=2",
    "--gin.TrainConfig.eval_batches=1", "--gin.NUM_STEPS=2",
]  # fmt: skip


@pytest.mark.slow
def test_stage1_then_stage2_with_the_shipped_configs(tmp_path, sentencepiece_model):
    hf_dir, base = tmp_path / "hf", str(tmp_path / "base")
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e-6)  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(hf_dir)
    import_main(["--hf_dir", str(hf_dir), "--out", base, "--vocab_size", "32001"])
    for name, tag in (("3_5M-GPT3_5-Augmented.parquet", "chatgpt"), ("1M-GPT4-Augmented.parquet", "gpt4")):
        rows = [{"id": f"niv.{tag}{i}", "system_prompt": "", "question": f"Q {i}?", "response": f"{tag} says {i}."}
                for i in range(300)]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / name))
    common = [f"--gin.OPENORCA_DIR={tmp_path}", f"--gin.TOKENIZER={sentencepiece_model}", *SHRINK]
    stage1, stage2 = str(tmp_path / "stage1"), str(tmp_path / "stage2")
    train_main(["--gin_file=configs/runs/orca_stage1.gin", f"--gin.MODEL_DIR={stage1}", f"--gin.BASE_CKPT={base}",
                *common])  # fmt: skip
    train_main(["--gin_file=configs/runs/orca_stage2.gin", f"--gin.MODEL_DIR={stage2}", f"--gin.STAGE1_DIR={stage1}",
                *common])  # fmt: skip
    meta1 = Checkpoints(checkpoints_dir(stage1), create=False).restore_meta(2)
    meta2 = Checkpoints(checkpoints_dir(stage2), create=False).restore_meta(2)
    assert (
        meta1["source"]["init_from"] == os.path.abspath(base)
        and meta1["data"]["sources"][0]["name"] == "openorca_gpt35"
    )
    assert meta2["source"] == {"init_from": os.path.abspath(stage1), "step": 2, "optimizer": False}
    assert meta2["data"]["sources"][0]["name"] == "openorca_gpt4" and meta2["model"]["vocab_size"] == 32001
    lines = [json.loads(line) for line in open(os.path.join(stage2, "metrics.jsonl"))]
    assert any("validation/loss" in m for m in lines)


def test_stage_configs_name_their_required_macros(tmp_path):
    with pytest.raises(SystemExit) as e:
        train_main(["--gin_file=configs/runs/orca_stage1.gin", f"--gin.MODEL_DIR={tmp_path}"])
    assert e.value.code == 2
