"""The lm-evaluation-harness adapter (orca_jax.evaluation.lm_harness): lm-eval 0.4.13 runs tasks defined
on local files against a tiny orca_jax checkpoint, from Python and from the command line, and what it
scores and generates is what `orca_jax.load(...)` computes itself. No downloads: the tasks read JSONL
written here through the `datasets` json builder, offline."""

from __future__ import annotations

import ast
import glob
import itertools
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import lm_eval  # the lm_eval extra, which `make test` installs
import numpy as np
import pytest
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

import orca_jax
from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir
from orca_jax.cli import lm_harness as lm_harness_binary
from orca_jax.errors import CheckpointError, ConfigError
from orca_jax.evaluation import lm_harness
from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder, init_params
from orca_jax.parallel import sharding

REPO = pathlib.Path(__file__).resolve().parent.parent
# float32 compute, so that the adapter's padded batches and orca_jax.load's unpadded forward agree to
# rounding; byte vocabulary (BOS 1, EOS 2), a params-only run as orca-train's checkpoints look.
TINY = ModelConfig(vocab_size=260, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64, dtype="float32")
SEQUENCE_LENGTH = 96  # the run's data sequence length: the adapter's default max_length
STEP = 5
TOLERANCE = 1e-4
CONTEXTS = ["Question: Which is a color?\nAnswer:", "2 + 3 =", "The capital of France is"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("lm_eval_run"))
    boxed = jax.jit(lambda: init_params(Decoder(TINY), jax.random.key(0)))()
    params = jax.device_get(sharding.strip_axis_names(boxed))
    checkpoints = Checkpoints(checkpoints_dir(root))
    meta = {
        "model": TINY.to_dict(),
        "vocabulary": "byte",
        "template": "orca",
        "data": {"sequence_length": SEQUENCE_LENGTH},
    }
    checkpoints.save_params(STEP, params, meta)
    checkpoints.close()
    return root


@pytest.fixture(scope="module")
def reference(run_dir):
    return orca_jax.load(run_dir)


@pytest.fixture
def offline(monkeypatch):
    """No hub access, here and in subprocesses (the json builder needs none)."""
    import datasets.config

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "1")
        monkeypatch.setattr(datasets.config, name, True)


def write_task(folder: pathlib.Path, name: str, rows: list[dict], **config) -> None:
    """An lm-eval task over `rows`, as YAML (written as JSON, which YAML reads) beside its JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "hf_cache")},
        "test_split": "test",
        **config,
    }
    (folder / f"{name}.yaml").write_text(json.dumps(spec, indent=1))


def write_one_question_task(folder: pathlib.Path) -> None:
    write_task(folder, "orca_one", [{"context": "x", "choices": [" a", " b"], "label": 0}],
               output_type="multiple_choice", doc_to_text="context", doc_to_choice="choices",
               doc_to_target="label")  # fmt: skip


def evaluate(folder: pathlib.Path, task: str, model_args: str, **kwargs) -> dict:
    return lm_eval.simple_evaluate(
        model="orca_jax", model_args=model_args, tasks=[task], log_samples=True,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False), **kwargs,
    )  # fmt: skip


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def scored(reference, ids: list[int], n: int) -> tuple[float, bool]:
    """From orca_jax.load's logits: the summed log-probability of the last n of `ids` after the ones
    before them, and whether each is the argmax."""
    logits = reference.logits([ids[:-1]])[0]
    logp = log_softmax(logits)
    positions = range(len(ids) - 1 - n, len(ids) - 1)
    total = sum(logp[p, ids[p + 1]] for p in positions)
    return float(total), all(int(np.argmax(logits[p])) == ids[p + 1] for p in positions)


def expected_loglikelihood(reference, context: str, continuation: str) -> tuple[float, bool]:
    """As lm-eval's HF model with a LLaMA tokenizer: BOS + context + continuation, the continuation
    being what follows the context's own tokens."""
    vocab = reference.bundle.vocabulary()
    ids = [vocab.bos_id, *vocab.encode(context + continuation)]
    return scored(reference, ids, len(ids) - 1 - len(vocab.encode(context)))


def greedy_option(reference) -> tuple[str, str]:
    """A context and the model's own greedy next tokens after it, as text: the leading ASCII bytes of
    its greedy continuation (byte vocabulary: id = byte + 4), since a lone byte >= 128 is no text."""
    vocab = reference.bundle.vocabulary()
    for context in [*CONTEXTS, "Hello", "Once upon a time", "The sky is"]:
        [ids] = reference.generate([[vocab.bos_id, *vocab.encode(context)]], max_new_tokens=3)
        ascii_ids = list(itertools.takewhile(lambda i: 4 <= i < 132, ids))
        if ascii_ids:
            text = vocab.decode(ascii_ids)
            assert list(vocab.encode(text)) == ascii_ids
            return context, text
    raise AssertionError("no candidate context has a greedy continuation starting with an ASCII byte")


@pytest.fixture
def choice_task(tmp_path, reference) -> tuple[pathlib.Path, list[dict]]:
    """A multiple-choice task; one option of the last question is the model's own greedy continuation,
    so is_greedy is true for it and false for the rest."""
    context, greedy = greedy_option(reference)
    rows = [
        {"context": CONTEXTS[0], "choices": [" blue", " table", " run"], "label": 0},
        {"context": CONTEXTS[1], "choices": [" 5", " six"], "label": 0},
        {"context": context, "choices": [" Paris", greedy], "label": 0},
    ]
    folder = tmp_path / "tasks"
    write_task(folder, "orca_mc", rows, output_type="multiple_choice", doc_to_text="context",
               doc_to_choice="choices", doc_to_target="label", target_delimiter="",
               metric_list=[{"metric": "acc"}])  # fmt: skip
    return folder, rows


def check_choice_scores(reference, rows: list[dict], samples: list[dict]) -> float:
    """Every option's (log-likelihood, is_greedy) as lm-eval logged it against the reference; returns
    the largest log-likelihood difference."""
    worst, greedy_seen = 0.0, 0
    assert sorted(s["doc_id"] for s in samples) == list(range(len(rows)))
    for sample in samples:
        row = rows[sample["doc_id"]]
        assert len(sample["resps"]) == len(row["choices"])
        for choice, [(logp, is_greedy)] in zip(row["choices"], sample["resps"], strict=True):
            want_logp, want_greedy = expected_loglikelihood(reference, row["context"], choice)
            worst = max(worst, abs(float(logp) - want_logp))
            assert str(is_greedy) == str(want_greedy), (row["context"], choice)
            greedy_seen += want_greedy
    assert greedy_seen == 1  # the planted greedy option, and nothing else
    assert worst < TOLERANCE
    return worst


def test_multiple_choice_from_python_matches_orca_jax_logits(choice_task, run_dir, reference, offline):
    folder, rows = choice_task
    results = evaluate(folder, "orca_mc", f"path={run_dir},step={STEP}", batch_size=3)
    worst = check_choice_scores(reference, rows, results["samples"]["orca_mc"])
    print(f"max |log-likelihood difference| {worst:.2e}")
    # acc follows from the same numbers: the label is the most likely option or not.
    acc = np.mean([max(range(len(r["choices"])), key=lambda i, r=r: expected_loglikelihood(
        reference, r["context"], r["choices"][i])[0]) == r["label"] for r in rows])  # fmt: skip
    assert results["results"]["orca_mc"]["acc,none"] == pytest.approx(acc)


def test_multiple_choice_from_the_command_line(choice_task, run_dir, reference, tmp_path, offline):
    """`python -m orca_jax.cli.lm_harness` is lm-eval's CLI with orca_jax registered (the
    `orca-lm-eval` console script runs the same main); one device, samples read from its output."""
    folder, rows = choice_task
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "orca_jax.cli.lm_harness", "--model", "orca_jax", "--model_args",
               f"path={run_dir},step={STEP}", "--tasks", "orca_mc", "--include_path", str(folder), "--batch_size", "2",
               "--log_samples", "--output_path", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [samples_file] = glob.glob(str(out / "**" / "samples_orca_mc_*.jsonl"), recursive=True)
    samples = [json.loads(line) for line in open(samples_file)]
    check_choice_scores(reference, rows, samples)


def test_generation_matches_orca_jax_generate(tmp_path, run_dir, reference, offline):
    """generate_until: greedy KV-cache decoding after BOS + context, cut at the first `until` string.
    The stop string is one the model really produces, so the cut is exercised."""
    max_new = 24
    full = reference.generate(CONTEXTS, max_new_tokens=max_new)
    first = full[0]
    cut_at = next((k for k in range(2, len(first)) if first[k] not in first[:k]), None)
    assert cut_at is not None, f"no usable stop string in {first!r}"
    stop = first[cut_at]
    expected = [text.split(stop)[0] for text in full]
    assert expected[0] == first[:cut_at]
    rows = [{"context": c, "target": "-"} for c in CONTEXTS]
    write_task(tmp_path / "tasks", "orca_gen", rows, output_type="generate_until", doc_to_text="context",
               doc_to_target="target", metric_list=[{"metric": "exact_match"}],
               generation_kwargs={"until": [stop], "max_gen_toks": max_new, "do_sample": False})  # fmt: skip
    results = evaluate(tmp_path / "tasks", "orca_gen", f"path={run_dir}", batch_size=2)
    got = {s["doc_id"]: s["resps"][0][0] for s in results["samples"]["orca_gen"]}
    assert [got[i] for i in range(len(CONTEXTS))] == expected


def test_rolling_loglikelihood_over_windows_matches_logits(tmp_path, run_dir, reference, offline):
    """A text three times max_length long, scored in lm-eval's rolling windows: the first max_length
    tokens after BOS, then each next block with the max_length tokens before its last as context.
    On a data x fsdp x tensor mesh of 2 x 2 x 2."""
    max_length = 32
    text = "Orca learns from explanations, step by step, and not from answers alone. " * 2
    write_task(tmp_path / "tasks", "orca_roll", [{"text": text}], output_type="loglikelihood_rolling",
               doc_to_text="", doc_to_target="text", metric_list=[{"metric": "word_perplexity"}])  # fmt: skip
    args = f"path={run_dir},max_length={max_length},data=2,fsdp=2,tensor=2"
    results = evaluate(tmp_path / "tasks", "orca_roll", args, batch_size=2)
    [sample] = results["samples"]["orca_roll"]
    got = float(np.ravel(sample["resps"])[0])

    vocab = reference.bundle.vocabulary()
    tokens = list(vocab.encode(text))
    assert len(tokens) > 3 * max_length
    want = scored(reference, [vocab.bos_id, *tokens[:max_length]], max_length)[0]
    done = max_length
    while done < len(tokens):
        end = min(done + max_length, len(tokens))
        want += scored(reference, tokens[end - max_length - 1 : end], end - done)[0]
        done = end
    assert abs(got - want) < TOLERANCE


def test_empty_context_is_bos_and_long_requests_keep_their_end(run_dir, reference):
    lm = lm_harness.OrcaJaxLM(path=run_dir, max_length=40, batch_size=4)
    assert lm.max_length == 40
    assert lm_harness.OrcaJaxLM(path=run_dir).max_length == SEQUENCE_LENGTH  # the run's sequence length
    vocab = reference.bundle.vocabulary()
    long_context = " ".join(["a long context that does not fit"] * 3)  # no trailing space (lm-eval moves it)
    requests = [("", "Hello"), (long_context, " end")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, args, i) for i, args in enumerate(requests)])
    want_empty = scored(reference, [vocab.bos_id, *vocab.encode("Hello")], 5)
    ids = [vocab.bos_id, *vocab.encode(long_context + " end")][-41:]  # max_length inputs and one more
    want_long = scored(reference, ids, 4)
    for (logp, greedy), (want_logp, want_greedy) in zip(got, [want_empty, want_long], strict=True):
        assert abs(logp - want_logp) < TOLERANCE and greedy == want_greedy


@pytest.mark.parametrize(
    "model_args, error, fragment",
    [
        ("step=5", ConfigError, "path is required"),
        ("path={run},pth=/x", ConfigError, "unknown argument(s) pth"),
        ("path={run},batch_size=0", ConfigError, "batch_size must be a whole number >= 1, got 0"),
        ("path={run},step=last", ConfigError, "step must be a whole number >= 0, got 'last'"),
        ("path={run}/nowhere", CheckpointError, "nowhere: no checkpoints folder"),
    ],
)
def test_bad_model_args_are_one_clear_error(run_dir, tmp_path, offline, model_args, error, fragment):
    write_one_question_task(tmp_path / "tasks")
    with pytest.raises(error, match=re.escape(fragment)):
        evaluate(tmp_path / "tasks", "orca_one", model_args.format(run=run_dir))


def test_bad_model_args_on_the_command_line_exit_2_without_a_traceback(run_dir, tmp_path, monkeypatch, capsys):
    # The same main as `orca-lm-eval`; lm-eval's CLI checks the task exists, then builds the model.
    write_one_question_task(tmp_path / "tasks")
    monkeypatch.setattr(sys, "argv", ["orca-lm-eval"])
    with pytest.raises(SystemExit) as stopped:
        lm_harness_binary.main(["--model", "orca_jax", "--model_args", f"path={run_dir},temprature=1",
                                "--tasks", "orca_one", "--include_path", str(tmp_path / "tasks")])  # fmt: skip
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "error: orca_jax model_args: unknown argument(s) temprature" in err and "Traceback" not in err


def test_console_script_and_extra_are_declared_and_only_the_adapter_imports_lm_eval():
    setup = (REPO / "setup.py").read_text()
    assert '"lm_eval": ["lm-eval==0.4.13"]' in setup
    [target] = re.findall(r'"orca-lm-eval=([\w.]+:\w+)"', setup)
    module, name = target.split(":")
    assert getattr(sys.modules[module], name) is lm_harness_binary.main
    assert lm_eval.api.registry.get_model("orca_jax") is lm_harness.OrcaJaxLM
    assert "hf" in lm_eval.api.registry.model_registry  # lm-eval's own models stay registered
    importers = []
    for path in sorted((REPO / "orca_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "lm_eval" or n.startswith("lm_eval.") for n in names):
                importers.append(path.relative_to(REPO).as_posix())
    assert sorted(set(importers)) == ["orca_jax/cli/lm_harness.py", "orca_jax/evaluation/lm_harness.py"]
