"""Bring your own model and data (configs/runs/finetune.gin): a tiny random Hugging Face Llama with a
real SentencePiece tokenizer and a Mistral-style chat template, fine-tuned on a `{question, response}`
JSONL with nothing set but BASE, TRAIN_FILES and MODEL_DIR; evaluated; exported to a Hugging Face
folder that transformers loads and chats with in the same template, generating what orca_jax does."""

import json
import os
import shutil

import gin
import numpy as np
import pytest
import torch
import transformers
from test_binaries import REPO, run
from test_chat_templates import make_tokenizer_folder

import orca_jax
from orca_jax.checkpoints import bundle, hf
from orca_jax.checkpoints.base_model import base_model_config, base_vocabulary
from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir
from orca_jax.data import jinja_templates
from orca_jax.data.templates import get_template
from orca_jax.errors import ConfigError

QUESTIONS = ["What is 2 + 3?", "Name a colour of the sky.", "Is 7 a prime number?", "Spell the word cat."]


def make_base(folder: str, sentencepiece_model: str) -> None:
    """A random 2-layer Llama over Mistral's 32,000-piece tokenizer, saved as transformers saves one."""
    config = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    make_tokenizer_folder(folder, "mistral", sentencepiece_model)


@pytest.fixture(scope="module")
def base(tmp_path_factory, sentencepiece_model):
    folder = str(tmp_path_factory.mktemp("base") / "tiny-llama")
    make_base(folder, sentencepiece_model)
    return folder


def test_base_model_config_and_vocabulary_come_from_base(base, tmp_path):
    config = base_model_config(base, remat="full")
    assert (config.vocab_size, config.d_model, config.num_layers, config.kv_heads) == (32000, 64, 2, 2)
    assert (config.param_dtype, config.dtype, config.remat) == ("float32", "float32", "full")  # CPU: fp32
    assert base_vocabulary(base) == os.path.join(base, "tokenizer.model")
    with pytest.raises(ConfigError, match=r"\['d_modle'\] are not ModelConfig fields"):
        base_model_config(base, d_modle=8)
    # An import keeps the tokenizer's files, chat template included, and records the template.
    out = str(tmp_path / "imported")
    assert run("import_hf", "--hf_dir", base, "--out", out).returncode == 0
    assert base_model_config(out).d_model == 64
    assert base_vocabulary(out) == os.path.join(out, "assets", "tokenizer.model")
    meta = Checkpoints(checkpoints_dir(out), create=False).restore_meta(0)
    assert jinja_templates.parse_spec(meta["template"])["chat_template"].startswith("{{ bos_token }}")
    assert os.path.isfile(os.path.join(out, "assets", "tokenizer_config.json"))


def test_a_data_config_layered_after_finetune_gin_keeps_the_base_tokenizer_and_template(base, tmp_path):
    from orca_jax.cli import gin_flags, train

    registry = gin_flags.register({**train.configurables(), "path_join": gin_flags.path_join})
    files = [f"{REPO}/configs/runs/finetune.gin", f"{REPO}/configs/data/slimorca.gin"]
    # slimorca.gin declares TOKENIZER = %gin.REQUIRED after finetune.gin set it: BASE's stays.
    gin_flags.parse_gin(files, [f"BASE = '{base}'", "MODEL_DIR = '/unused'", "SLIMORCA_FILES = 'slim.jsonl'"])
    try:
        data = registry["finetune_data"]()
    finally:
        gin.clear_config()
    assert [fs.name for fs in data.sources] == ["slimorca"] and data.policy == "skip"  # the data config's
    assert data.vocabulary == os.path.join(base, "tokenizer.model") and data.added_tokens == ()  # BASE's
    assert jinja_templates.parse_spec(data.template)["eos_token"] == "</s>"


@pytest.mark.slow
def test_finetune_eval_export_and_transformers_generate_the_same(base, tmp_path):
    records = [{"question": q, "response": f"The answer to '{q}' is short."} for q in QUESTIONS] * 100
    train_file, model_dir, export = str(tmp_path / "mine.jsonl"), str(tmp_path / "run"), str(tmp_path / "export")
    with open(train_file, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)

    base_copy = str(tmp_path / "base")
    shutil.copytree(base, base_copy)
    result = run("train", "--gin_file=configs/runs/finetune.gin", f"--gin.BASE={base_copy}",
                 f"--gin.TRAIN_FILES={train_file}", f"--gin.MODEL_DIR={model_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 epochs of" in result.stdout and "starting from the parameters in" in result.stdout, result.stdout
    assert ": 2 steps" in result.stdout, result.stdout  # warmup starts at 0: the second step updates
    metrics = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
    assert metrics and np.isfinite(metrics[-1]["loss"]) and metrics[-1]["loss_tokens_per_step"] > 0
    meta = Checkpoints(checkpoints_dir(model_dir), create=False).restore_meta(metrics[-1]["step"])
    assert meta["template"] == meta["data"]["template"] and jinja_templates.is_spec(meta["template"])
    shutil.rmtree(base_copy)  # the run holds what evaluation and export need: its template, its tokenizer

    heldout_file = str(tmp_path / "heldout.jsonl")
    with open(heldout_file, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records[:8])
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "arith.json").write_text(json.dumps({"examples": [{"input": "What is 2 + 3?", "target": "5"}] * 2}))
    result = run("eval", "--gin_file=configs/runs/eval_finetune.gin", f"--gin.CHECKPOINT_DIR={model_dir}",
                 f"--gin.HELDOUT={heldout_file}", f"--gin.Suites.task_dirs={{'mine': '{tasks}'}}",
                 "--gin.Generation.max_new_tokens=6")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    step = metrics[-1]["step"]
    written = json.load(open(os.path.join(model_dir, "eval", f"metrics_step_{step}.json")))
    assert written["heldout/loss"] > 0 and "mine/arith/accuracy" in written
    inference = json.loads(open(os.path.join(model_dir, "eval", f"inferences_step_{step}.jsonl")).readline())
    assert "generation" in inference

    result = run("export", "--checkpoint_dir", model_dir, "--format", "hf", "--out", export)
    assert result.returncode == 0, result.stderr[-3000:]
    # Fine-tuning changed the weights, and the export holds them.
    assert not np.array_equal(hf.SafetensorsFolder(export).get("model.layers.0.mlp.up_proj.weight"),
                              hf.SafetensorsFolder(base).get("model.layers.0.mlp.up_proj.weight"))  # fmt: skip
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    model = transformers.AutoModelForCausalLM.from_pretrained(export).eval()
    ours = orca_jax.load(model_dir)
    vocab = ours.bundle.vocabulary()
    for question in QUESTIONS[:2]:
        chat = [{"role": "user", "content": question}]
        asked = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert asked == tokenizer.bos_token + ours.chat_prompt(question)  # the template it was trained in
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert list(ids) == [vocab.bos_id, *vocab.encode(ours.chat_prompt(question))]  # token for token
        (mine,) = ours.generate([ids], max_new_tokens=12)
        with torch.no_grad():
            theirs = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids) :].tolist()
        cut = theirs.index(vocab.eos_id) + 1 if vocab.eos_id in theirs else len(theirs)
        assert mine == theirs[:cut]
        assert ours.generate([ours.chat_prompt(question)], max_new_tokens=12)[0] == vocab.decode(
            [t for t in mine if t != vocab.eos_id]
        )
    # The exported folder is itself a base orca_jax reads in its own template.
    assert bundle.is_hf_folder(export) and orca_jax.load(export).chat_prompt("hi") == ours.chat_prompt("hi")


def test_a_tokenizer_json_model_exports_in_its_own_template(tmp_path, sentencepiece_model):
    """Llama-3's layout: a tokenizer.json alone (ids shifted by one in orca_jax), <|eot_id|> as EOS."""
    from tokenizers import Tokenizer

    from orca_jax.cli.export import main as export_main

    folder, out = str(tmp_path / "llama3"), str(tmp_path / "export")
    vocabulary = make_tokenizer_folder(folder, "llama3", sentencepiece_model)
    tok = Tokenizer.from_file(vocabulary)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, bos_token_id=tok.token_to_id("<|begin_of_text|>"),
        eos_token_id=tok.token_to_id("<|eot_id|>"),
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    export_main(["--checkpoint_dir", folder, "--format", "hf", "--out", out])

    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ours = orca_jax.load(out)
    vocab = ours.bundle.vocabulary()
    assert vocab.eos_id - 1 == tok.token_to_id("<|eot_id|>") == tokenizer.eos_token_id
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    asked = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert asked == "<|begin_of_text|>" + ours.chat_prompt("What is 2 + 3?", system="Be brief.")
    ids = tokenizer(asked, add_special_tokens=False)["input_ids"]
    assert [i + 1 for i in ids] == [vocab.bos_id, *vocab.encode(ours.chat_prompt("What is 2 + 3?", "Be brief."))]
    (mine,) = ours.generate([[i + 1 for i in ids]], max_new_tokens=10)
    with torch.no_grad():
        theirs = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[0, len(ids) :].tolist()
    cut = theirs.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in theirs else len(theirs)
    assert mine == [t + 1 for t in theirs[:cut]]


def test_a_model_without_a_chat_template_exports_the_one_orca_jax_asks_it_in(tmp_path, sentencepiece_model):
    """No chat_template in the folder: orca_jax asks in Orca's layout, and the export says so in Jinja."""
    from orca_jax.cli.export import main as export_main

    folder, out = tmp_path / "plain", str(tmp_path / "export")
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, bos_token_id=1, eos_token_id=2)  # fmt: skip
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    shutil.copyfile(sentencepiece_model, folder / "tokenizer.model")
    export_main(["--checkpoint_dir", str(folder), "--format", "hf", "--out", out])
    ours, tokenizer = orca_jax.load(out), transformers.AutoTokenizer.from_pretrained(out)
    assert jinja_templates.is_spec(ours.bundle.template)  # the export carries Orca's layout, as Jinja
    assert ours.chat_prompt("What is 2 + 3?", "Be brief.") == get_template("orca").prompt("Be brief.", "What is 2 + 3?")
    vocab = ours.bundle.vocabulary()
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert list(ids) == [vocab.bos_id, *vocab.encode(ours.chat_prompt("What is 2 + 3?", "Be brief."))]
