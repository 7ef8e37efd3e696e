"""Hugging Face interop against the reference implementation (torch + transformers, CPU, fp32).

Tiny random models saved by transformers are imported; with default arguments (the weights' own
dtype) orca_jax's logits must match transformers' within 1e-4, greedy generation must match
`generate` token for token, and import then export must give back the source tensors byte for byte,
for fp32 and bf16 sources alike.
"""

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers

import orca_jax
from orca_jax.checkpoints import bundle, hf
from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir
from orca_jax.cli.export import main as export_main
from orca_jax.cli.import_hf import main as import_main
from orca_jax.errors import ConfigError
from orca_jax.model.config import ModelConfig
from orca_jax.parallel.sharding import MeshConfig

VOCAB = 300
COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip
MODELS = {
    "llama_gqa_llama3_rope": (transformers.LlamaConfig, dict(
        num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    )),
    "llama_mha_tied": (transformers.LlamaConfig, dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "mistral_sliding_window": (transformers.MistralConfig, dict(num_key_value_heads=2, sliding_window=8)),
}  # fmt: skip


def make_hf_model(name, folder, dtype=torch.float32):
    config_cls, extra = MODELS[name]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_cls(**COMMON, **extra), attn_implementation="eager")
    with torch.no_grad():  # norms start at 1; make them matter
        for module_name, p in model.named_parameters():
            if "norm" in module_name:
                p.uniform_(0.5, 1.5)
    model.eval()
    model.to(dtype).save_pretrained(folder)
    return model


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


TOKENS = np.random.default_rng(0).integers(3, VOCAB, (2, 24)).tolist()


@pytest.fixture(scope="module", params=sorted(MODELS))
def imported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    hf_dir, ckpt = str(root / "hf"), str(root / "ckpt")
    model = make_hf_model(request.param, hf_dir)
    import_main(["--hf_dir", hf_dir, "--out", ckpt])
    return request.param, model, hf_dir, ckpt


def safetensors_of(folder):
    """{name: (dtype, shape, bytes)} of every tensor in an HF folder."""
    tensors = hf.SafetensorsFolder(folder)
    return {n: (t.dtype, t.shape, t.tobytes()) for n in tensors.names() for t in [tensors.get(n)]}


def test_imported_logits_match_transformers(imported):
    _, model, _, ckpt = imported
    loaded = orca_jax.load(ckpt)  # default arguments: the fp32 weights compute in fp32
    assert (loaded.config.param_dtype, loaded.config.dtype) == ("float32", "float32")
    ours = loaded.logits(TOKENS)
    assert ours.shape == (2, 24, VOCAB)
    np.testing.assert_allclose(ours, hf_logits(model, TOKENS), atol=1e-4, rtol=0)


def test_hf_folder_loads_directly_and_sharded_on_8_devices(imported, devices):
    _, model, hf_dir, _ = imported
    ours = orca_jax.load(hf_dir, mesh_config=MeshConfig(data=2, fsdp=2, tensor=2)).logits(TOKENS)
    np.testing.assert_allclose(ours, hf_logits(model, TOKENS), atol=1e-4, rtol=0)


def test_greedy_generation_matches_transformers_generate(imported):
    _, model, _, ckpt = imported
    prompts = [[1, 17, 42, 99, 5], [1, 250, 7, 7, 31]]  # equal lengths: transformers needs no padding
    ours = orca_jax.load(ckpt).generate(prompts, max_new_tokens=12)
    with torch.no_grad():
        theirs = model.generate(torch.tensor(prompts), max_new_tokens=12, do_sample=False, eos_token_id=2,
                                pad_token_id=0).numpy()[:, 5:].tolist()  # fmt: skip
    for ours_row, theirs_row in zip(ours, theirs, strict=True):
        cut = theirs_row.index(2) + 1 if 2 in theirs_row else len(theirs_row)
        assert ours_row == theirs_row[:cut]


def test_explicit_dtype_overrides_the_compute_dtype(imported):
    _, model, _, ckpt = imported
    loaded = orca_jax.load(ckpt, dtype="bfloat16")
    assert loaded.config.dtype == "bfloat16"
    assert {x.dtype for x in jax.tree.leaves(loaded.bundle.params)} == {np.dtype(np.float32)}  # stored as is
    error = np.abs(loaded.logits(TOKENS) - hf_logits(model, TOKENS)).max()
    assert 1e-4 < error < 0.1  # really computed in bf16


def test_export_to_hf_gives_back_the_source_then_reimport_is_bit_identical(imported, tmp_path):
    _, model, hf_dir, ckpt = imported
    out, again = str(tmp_path / "export"), str(tmp_path / "again")
    export_main(["--checkpoint_dir", ckpt, "--format", "hf", "--out", out, "--max_shard_gb", "0.0002"])
    assert safetensors_of(out) == safetensors_of(hf_dir)  # names, dtypes, shapes and bytes
    assert json.load(open(f"{out}/config.json"))["torch_dtype"] == "float32"
    index = json.load(open(os.path.join(out, hf.INDEX_NAME)))
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    np.testing.assert_array_equal(hf_logits(reloaded, TOKENS), hf_logits(model, TOKENS))
    import_main(["--hf_dir", out, "--out", again])
    first, second = (Checkpoints(checkpoints_dir(d), create=False) for d in (ckpt, again))
    params = first.restore_params(0, bundle.load_hf_params(out, bundle.hf_model_config(out)))
    bundle.verify_same(params, second.restore_params(0, params), "re-import")


def test_params_export_in_bfloat16_is_smaller_and_loads(imported, tmp_path):
    _, model, _, ckpt = imported
    out = str(tmp_path / "params")
    export_main(["--checkpoint_dir", ckpt, "--format", "params", "--dtype", "bfloat16", "--out", out])
    meta = Checkpoints(checkpoints_dir(out), create=False).restore_meta(0)
    assert meta["source"]["run"] == os.path.abspath(ckpt) and "opt_state" not in os.listdir(f"{out}/checkpoints/0")
    assert meta["model"]["param_dtype"] == "bfloat16"
    loaded = orca_jax.load(out)
    assert {x.dtype for x in jax.tree.leaves(loaded.bundle.params)} == {np.dtype(ml_dtypes.bfloat16)}
    ours = loaded.logits(TOKENS)  # the import's fp32 compute dtype, bf16 weights
    np.testing.assert_allclose(ours, hf_logits(model, TOKENS), atol=0.1)  # bf16 weights


def test_export_refuses_a_non_empty_folder(imported, tmp_path):
    _, _, _, ckpt = imported
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit) as e:
        export_main(["--checkpoint_dir", ckpt, "--format", "hf", "--out", str(tmp_path)])
    assert e.value.code == 2 and (tmp_path / "mine.txt").read_text() == "keep"


def test_bf16_source_keeps_bf16_through_load_import_and_export(tmp_path):
    hf_dir, ckpt, out = str(tmp_path / "hf"), str(tmp_path / "ckpt"), str(tmp_path / "out")
    model = make_hf_model("llama_gqa_llama3_rope", hf_dir, torch.bfloat16)
    assert {d for d, _, _ in safetensors_of(hf_dir).values()} == {np.dtype(ml_dtypes.bfloat16)}
    bf16 = np.dtype(ml_dtypes.bfloat16)
    for source in (hf_dir, ckpt):
        if source == ckpt:
            import_main(["--hf_dir", hf_dir, "--out", ckpt])
        loaded = orca_jax.load(source)
        assert (loaded.config.param_dtype, loaded.config.dtype) == ("bfloat16", "bfloat16")
        assert {x.dtype for x in jax.tree.leaves(loaded.bundle.params)} == {bf16}
    export_main(["--checkpoint_dir", ckpt, "--format", "hf", "--out", out])
    assert safetensors_of(out) == safetensors_of(hf_dir)
    assert json.load(open(f"{out}/config.json"))["torch_dtype"] == "bfloat16"
    # dtype= overrides the compute dtype only: bf16 weights computed in fp32 are transformers' fp32
    # model of the same bf16 weights.
    ours = orca_jax.load(ckpt, dtype="float32").logits(TOKENS)
    np.testing.assert_allclose(ours, hf_logits(model.float(), TOKENS), atol=1e-4, rtol=0)


def test_the_weights_dtype_wins_over_config_json_and_flags_cast(tmp_path):
    hf_dir, ckpt, out = tmp_path / "hf", str(tmp_path / "ckpt"), str(tmp_path / "out")
    make_hf_model("llama_mha_tied", str(hf_dir), torch.bfloat16)
    config = json.loads((hf_dir / "config.json").read_text())
    config.update({"torch_dtype": "float32", "dtype": "float32"})  # a stale label
    (hf_dir / "config.json").write_text(json.dumps(config))
    assert orca_jax.load(str(hf_dir)).config.dtype == "bfloat16"
    import_main(["--hf_dir", str(hf_dir), "--out", ckpt, "--dtype", "float32"])
    assert orca_jax.load(ckpt).config.dtype == "float32"
    export_main(["--checkpoint_dir", ckpt, "--format", "hf", "--out", out])
    source, written = safetensors_of(str(hf_dir)), safetensors_of(out)
    assert {d for d, _, _ in written.values()} == {np.dtype(np.float32)}  # stored fp32: exported fp32
    export_main(["--checkpoint_dir", ckpt, "--format", "hf", "--dtype", "bfloat16", "--out", out, "--overwrite"])
    assert safetensors_of(out) == source  # bf16 -> fp32 -> bf16 is exact


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
        ({"hidden_act": "gelu"}, "hidden_act = 'gelu' is not supported"),
        ({"attention_bias": True}, "attention_bias = True is not supported"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope type 'yarn' is not supported"),
    ],
)
def test_unsupported_hf_configs_name_the_field(change, message):
    config = {**transformers.LlamaConfig(**COMMON).to_dict(), **change}
    with pytest.raises(ConfigError, match=message):
        hf.config_from_hf(config, "x/config.json")


def test_pickled_weights_are_refused(tmp_path):
    transformers.LlamaConfig(**COMMON).save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ConfigError, match="pickled .bin weights are never loaded"):
        hf.SafetensorsFolder(str(tmp_path))


def test_training_starts_from_an_imported_checkpoint(tmp_path):
    from orca_jax.data.config import DataConfig, FileSet
    from orca_jax.datagen.mini_orca import write_mini_orca
    from orca_jax.training.optimizer import OptimizerConfig
    from orca_jax.training.trainer import TrainConfig, train

    hf_dir, ckpt, run = str(tmp_path / "hf"), str(tmp_path / "ckpt"), str(tmp_path / "run")
    make_hf_model("llama_mha_tied", hf_dir)
    import_main(["--hf_dir", hf_dir, "--out", ckpt])
    paths = write_mini_orca(str(tmp_path / "data"), num_train=32, num_heldout=4, families=["addition"], seed=0)
    imported = bundle.load(ckpt, bundle_mesh := _one_device_mesh())
    config = ModelConfig.from_dict({**imported.config.to_dict(), "dtype": "float32"})
    data = DataConfig(
        sources=(FileSet("init_from_test", train=paths["train_strong"]),), vocabulary="byte", sequence_length=256
    )
    frozen = OptimizerConfig(learning_rate=0.0, warmup_steps=0, weight_decay=0.0)
    train(run, config, data, frozen, MeshConfig(), TrainConfig(num_steps=2, batch_size=8, log_every=1), init_from=ckpt)
    trained = bundle.load(run, bundle_mesh)
    bundle.verify_same(jax.device_get(imported.params), jax.device_get(trained.params), "trained with lr 0")

    other = ModelConfig.from_dict({**config.to_dict(), "rope_theta": 5.0})
    with pytest.raises(ConfigError, match="rope_theta: run 5.0, checkpoint 10000.0"):
        train(str(tmp_path / "run2"), other, data, frozen, MeshConfig(), TrainConfig(num_steps=1, batch_size=8),
              init_from=ckpt)  # fmt: skip


def _one_device_mesh():
    from orca_jax.parallel import sharding

    return sharding.make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])


def test_export_writes_tokenizer_files_transformers_reads(tmp_path, sentencepiece_model):
    """With Orca's added pad token: 32,000 SentencePiece ids + <pad> = 32,001."""
    import shutil

    hf_dir, ckpt, out = tmp_path / "hf", str(tmp_path / "ckpt"), str(tmp_path / "out")
    small = {**COMMON, "vocab_size": 32000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**small)).save_pretrained(hf_dir)
    shutil.copyfile(sentencepiece_model, hf_dir / "tokenizer.model")
    import_main(["--hf_dir", str(hf_dir), "--out", ckpt, "--vocab_size", "32001"])
    export_main(["--checkpoint_dir", ckpt, "--format", "hf", "--out", out])
    assert {"config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json",
            "special_tokens_map.json", hf.INDEX_NAME} <= set(os.listdir(out))  # fmt: skip
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    vocab = orca_jax.load(ckpt).bundle.vocabulary()
    text = "Orca explains: 677 + 996 = 1673."
    assert tokenizer(text)["input_ids"] == [vocab.bos_id, *vocab.encode(text)]
    assert tokenizer.pad_token == "<pad>" and tokenizer.convert_tokens_to_ids("<pad>") == 32000
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 32001 and model.get_input_embeddings().weight.shape == (32001, 32)


def test_llama3_style_tokenizer_json_shifts_ids_and_round_trips(tmp_path):
    """A folder with only tokenizer.json: ids shift up by one so that 0 stays padding."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    hf_dir, ckpt, out = tmp_path / "hf", str(tmp_path / "ckpt"), str(tmp_path / "out")
    model = make_hf_model("llama_gqa_llama3_rope", str(hf_dir))
    words = ["!", "<|begin_of_text|>", "<|eot_id|>"] + [f"w{i}" for i in range(VOCAB - 3)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(hf_dir / "tokenizer.json"))
    import_main(["--hf_dir", str(hf_dir), "--out", ckpt])
    loaded = orca_jax.load(ckpt, dtype="float32")
    assert loaded.config.id_offset == 1 and loaded.config.vocab_size == VOCAB + 1
    ours = loaded.logits((np.array(TOKENS) + 1).tolist())
    np.testing.assert_allclose(ours[..., 1:], hf_logits(model, TOKENS), atol=1e-4, rtol=0)
    assert ours[..., 0].max() < -1e29  # the padding id is never predicted
    vocab = loaded.bundle.vocabulary()
    assert vocab.encode("! w5") == [1, 9] and vocab.bos_id == 2
    export_main(["--checkpoint_dir", ckpt, "--format", "hf", "--dtype", "float32", "--out", out])
    assert "tokenizer.json" in os.listdir(out)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    np.testing.assert_array_equal(hf_logits(reloaded, TOKENS), hf_logits(model, TOKENS))
    assert json.load(open(f"{out}/config.json"))["vocab_size"] == VOCAB
