"""orca-eval: benchmark readers in their official layouts, the metrics, following a run's checkpoints
with a ledger, the binary end to end on a tiny checkpoint, rescoring, and clear errors for bad input."""

import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest

from orca_jax.checkpoints.store import Checkpoints, checkpoints_dir, mark_finished
from orca_jax.cli import eval as eval_binary
from orca_jax.errors import DataError
from orca_jax.evaluation import evaluator, follow, responses, suites
from orca_jax.model.config import ModelConfig
from orca_jax.model.llama import Decoder, init_params
from orca_jax.parallel import sharding

TINY = ModelConfig(vocab_size=260, d_model=32, num_layers=1, num_heads=2, num_kv_heads=2, mlp_dim=64)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


@functools.cache
def tiny_params():
    boxed = jax.jit(lambda: init_params(Decoder(TINY), jax.random.key(0)))()
    return jax.device_get(sharding.strip_axis_names(boxed))


def make_run(model_dir, steps=(2, 4)):
    """A params-only run of the tiny byte-vocabulary model, as orca-train's checkpoints look to eval."""
    params = tiny_params()
    checkpoints = Checkpoints(checkpoints_dir(str(model_dir)))
    for step in steps:
        checkpoints.save_params(step, params, {"model": TINY.to_dict(), "vocabulary": "byte", "template": "orca"})
    checkpoints.close()
    return str(model_dir)


@pytest.fixture
def task_dir(tmp_path):
    """Three BBH-format tasks: options, Yes/No, numbers."""
    folder = tmp_path / "tasks"
    write_json(folder / "colors.json", {"examples": [
        {"input": "Which is a color?\nOptions:\n(A) blue\n(B) table", "target": "(A)"},
        {"input": "Which is a fruit?\nOptions:\n(A) chair\n(B) apple\n(C) sky", "target": "(B)"},
    ]})  # fmt: skip
    write_json(folder / "yes.json", {"examples": [{"input": "Is 3 odd?", "target": "Yes"}]})
    write_json(folder / "sums.json", {"examples": [{"input": "What is 2 + 3?", "target": "5"}]})
    return str(folder)


@pytest.fixture
def agieval_dir(tmp_path):
    folder = tmp_path / "agieval"
    row = {"passage": "A passage.", "question": "Pick one.", "options": ["(A)x", "(B)y", "(C)z", "(D)w"], "label": "C"}
    write_jsonl(folder / "lsat-lr.jsonl", [row, {**row, "passage": None, "label": "A"}])
    return str(folder)


def test_bbh_reader_requires_every_task_and_names_bad_files(tmp_path, task_dir):
    with pytest.raises(DataError, match="missing boolean_expressions.json"):
        suites.read_bbh(task_dir)
    examples = suites.read_task_folder(task_dir, "mine")
    by_task = {ex.task: ex for ex in reversed(examples)}  # each task's first example
    assert by_task["mine/colors"].form == "choice" and by_task["mine/colors"].options == (("A", "blue"), ("B", "table"))
    assert by_task["mine/yes"].form == "yes_no" and by_task["mine/sums"].form == "number"
    (tmp_path / "tasks" / "broken.json").write_text('{"examples": [\n{"input": "x", "target": 3}]}')
    with pytest.raises(DataError, match=r"broken.json: examples\[0\]: needs string fields"):
        suites.read_task_folder(task_dir, "mine")
    (tmp_path / "tasks" / "broken.json").write_text('{"examples": [\n{"input": ')
    with pytest.raises(DataError, match=r"broken.json:2: not valid JSON"):
        suites.read_task_folder(task_dir, "mine")
    with pytest.raises(DataError, match="no such folder"):
        suites.read_task_folder(str(tmp_path / "nope"), "mine")


def test_agieval_reader_prompt_and_errors(tmp_path, agieval_dir):
    examples = suites.read_agieval(agieval_dir, ("lsat-lr",))
    first, second = examples
    assert first.task == "agieval/lsat-lr" and first.target == "C" and first.form == "letter"
    assert first.input == "A passage.\nQ: Pick one. Answer Choices: (A)x (B)y (C)z (D)w"
    assert first.reply_prefix == "Among A through D, the answer is"
    assert second.input.startswith("Q: Pick one.") and first.options[2] == ("C", "z")
    with pytest.raises(DataError, match="missing sat-math.jsonl"):
        suites.read_agieval(agieval_dir, ("lsat-lr", "sat-math"))
    bad = tmp_path / "bad"
    write_jsonl(bad / "lsat-lr.jsonl", [{"question": "q", "options": ["(A)x", "(B)y"], "label": "E"}])
    with pytest.raises(DataError, match=r"lsat-lr.jsonl:1: label: 'E' is not one of the option letters"):
        suites.read_agieval(str(bad), ("lsat-lr",))
    (bad / "lsat-lr.jsonl").write_text('{"question": "q", "options": ["(A)x"], "label": "A"}\n{oops\n')
    with pytest.raises(DataError, match=r"lsat-lr.jsonl:2: not valid JSON"):
        suites.read_agieval(str(bad), ("lsat-lr",))
    (bad / "lsat-lr.jsonl").write_text('["q", "(A)x"]\n')
    with pytest.raises(DataError, match=r"lsat-lr.jsonl:1: expected a JSON object"):
        suites.read_agieval(str(bad), ("lsat-lr",))
    (bad / "lsat-lr.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"lsat-lr.jsonl: no examples"):
        suites.read_agieval(str(bad), ("lsat-lr",))


@pytest.mark.parametrize(
    "options",
    [
        ["(A)No dangshen", "(B)Yes", "(C) Maybe so", "(D)A lot"],  # the common layout
        ["A No dangshen", "B Yes", "C Maybe so", "D A lot"],  # logiqa-en
        ["     A. No dangshen   ", " B. Yes", "C.Maybe so", "D. A lot"],  # gaokao-english, padded
        ["A) No dangshen", "B) Yes", "C) Maybe so", "D) A lot"],
    ],
)
def test_agieval_options_in_every_layout_the_public_files_use(tmp_path, options):
    write_jsonl(tmp_path / "logiqa-en.jsonl", [{"question": "q", "options": options, "label": "D"}])
    (example,) = suites.read_agieval(str(tmp_path), ("logiqa-en",))
    assert example.options == (("A", "No dangshen"), ("B", "Yes"), ("C", "Maybe so"), ("D", "A lot"))
    assert example.target == "D" and "Answer Choices: " + " ".join(o.strip() for o in options) in example.input


def test_agieval_option_letters_come_from_positions_as_in_the_real_files(tmp_path):
    # logiqa-en lines 11 and 525 as published: a full-width mark lost ("A?"), and options with no letter.
    options = ["A? Many buy homes", "(B)Turnover", "When the land in City A.B", "Storehouse B.3"]
    write_jsonl(tmp_path / "logiqa-en.jsonl", [{"question": "q", "options": options, "label": "B"}])
    (example,) = suites.read_agieval(str(tmp_path), ("logiqa-en",))
    assert example.options == (
        ("A", "Many buy homes"), ("B", "Turnover"), ("C", "When the land in City A.B"), ("D", "Storehouse B.3"),
    )  # fmt: skip
    write_jsonl(tmp_path / "lsat-lr.jsonl", [{"question": "q", "options": options, "label": "E"}])
    with pytest.raises(DataError, match=r"lsat-lr.jsonl:1: label: 'E' is not one of the option letters"):
        suites.read_agieval(str(tmp_path), ("lsat-lr",))


def test_a_task_of_option_letters_with_a_few_titles_is_a_choice_task(tmp_path):
    # movie_recommendation and ruin_names: most targets "(X)", a few the option's text.
    question = "Find a movie like Up.\nOptions:\n(A) Cars\n(B) Monsters, Inc\n(C) Heat"
    rows = [{"input": question, "target": t} for t in ("(A)", "(C)", "Monsters, Inc")]
    write_json(tmp_path / "movie_recommendation.json", {"examples": rows})
    examples = suites.read_bbh_file(str(tmp_path / "movie_recommendation.json"))
    assert {ex.form for ex in examples} == {"choice"} and [ex.target for ex in examples] == ["(A)", "(C)", "(B)"]
    # A title no single option holds (BBH's own "Monsters, Inc" split into two options) is read as free text.
    split = [*rows, {"input": question, "target": "(A)"}, {"input": question, "target": "Heat, Cars"}]
    write_json(tmp_path / "split.json", {"examples": split})
    *_, last = suites.read_bbh_file(str(tmp_path / "split.json"))
    assert (last.form, last.target, last.options) == ("free", "Heat, Cars", ())
    titles = [{"input": question, "target": t} for t in ("(A)", "Heat", "Cars")]  # letters a minority: free text
    write_json(tmp_path / "titles.json", {"examples": titles})
    assert {ex.form for ex in suites.read_bbh_file(str(tmp_path / "titles.json"))} == {"free"}


def test_task_metrics_report_orca_23_beside_all_27():
    rows = []
    for i, task in enumerate(suites.BBH_TASKS):
        correct = task not in suites.BBH_NOT_IN_ORCA  # right on Orca's 23, wrong on the other 4
        rows.append({"task": f"bbh/{task}", "generation": "g", "answer": "x" if i % 2 else None, "correct": correct})
    metrics = evaluator.task_metrics(rows)
    assert metrics["bbh/average_orca23"] == 1.0
    assert metrics["bbh/average"] == pytest.approx(23 / 27)
    assert metrics["bbh/navigate/examples"] == 1.0
    assert metrics["bbh/average_parsed"] == pytest.approx(13 / 27)
    assert "bbh/average_orca23" not in evaluator.task_metrics(rows[:5])  # only with all 23 present


def test_follow_evaluates_each_checkpoint_once_and_stops_when_training_finished(tmp_path):
    run = make_run(tmp_path / "run", steps=(2, 4))
    out = str(tmp_path / "run" / "eval")
    seen = []

    def evaluate_step(step):
        seen.append(step)
        return {"step": float(step)}

    # Training has not finished: both checkpoints, then waiting until the timeout.
    follow.follow(run, "all", evaluate_step, out, poll_seconds=0.05, timeout_seconds=0.3)
    assert seen == [2, 4] and follow.read_ledger(out) == [2, 4]
    # A new checkpoint and the finished marker: only the new step, then it stops by itself.
    make_run(tmp_path / "run", steps=(6,))
    mark_finished(run, 6)
    follow.follow(run, "all", evaluate_step, out, poll_seconds=0.05)
    assert seen == [2, 4, 6] and follow.read_ledger(out) == [2, 4, 6]
    follow.follow(run, "all", evaluate_step, out, poll_seconds=0.05)  # all done: evaluates nothing
    assert seen == [2, 4, 6]
    follow.follow(run, "latest", evaluate_step, out)
    follow.follow(run, 2, evaluate_step, out)
    assert seen == [2, 4, 6, 6, 2]


def test_eval_binary_end_to_end_rescore_and_ledger(tmp_path, task_dir, agieval_dir, monkeypatch, capsys):
    run = make_run(tmp_path / "run", steps=(2, 4))
    heldout = tmp_path / "heldout.jsonl"
    write_jsonl(heldout, [{"id": f"h{i}", "system_prompt": "", "question": f"What is {i} + 1?",
                           "response": f"So the answer is {i + 1}."} for i in range(6)])  # fmt: skip
    args = [
        "--gin_file=configs/runs/eval_mini.gin", f"--gin.CHECKPOINT_DIR={run}",
        f"--gin.Suites.task_dirs={{'mine': '{task_dir}'}}", f"--gin.Suites.agieval_dir={agieval_dir}",
        "--gin.Suites.agieval_tasks=['lsat-lr']", f"--gin.Suites.heldout={heldout}",
        "--gin.Generation.scoring='both'", "--gin.Generation.max_new_tokens=4", "--gin.Generation.batch_size=8",
        "--gin.evaluate.steps='all'", "--gin.evaluate.timeout_seconds=0.1", "--gin.evaluate.poll_seconds=0.05",
    ]  # fmt: skip
    eval_binary.main(args)
    out = os.path.join(run, "eval")
    assert follow.read_ledger(out) == [2, 4]
    metrics = json.load(open(os.path.join(out, "metrics_step_4.json")))
    assert metrics["step"] == 4 and metrics["heldout/loss"] > 0 and metrics["heldout/response_tokens"] > 0
    assert metrics["mine/colors/examples"] == 2 and metrics["agieval/lsat-lr/examples"] == 2
    assert {"mine/average", "agieval/average", "mine/average_rank_accuracy", "agieval/average_parsed"} <= set(metrics)
    rows = [json.loads(line) for line in open(os.path.join(out, "inferences_step_4.jsonl"))]
    assert len(rows) == 6 and {"task", "input", "target", "generation", "answer", "correct"} <= set(rows[0])
    ranked = [r for r in rows if "ranked" in r]
    assert len(ranked) == 4 and all(r["ranked"] in "ABCD" for r in ranked)  # the two choice tasks' examples
    assert os.listdir(os.path.join(out, "tensorboard"))
    capsys.readouterr()

    # rescore recomputes exactly the generation metrics from the file, with no model.
    eval_binary.main(["rescore", "--inferences", os.path.join(out, "inferences_step_4.jsonl"),
                      "--out", str(tmp_path / "rescored.json")])  # fmt: skip
    rescored = json.load(open(tmp_path / "rescored.json"))
    for key, value in rescored.items():
        if "rank" not in key:
            assert metrics[key] == value, key

    # A second follow finds nothing new (the ledger) and stops at the timeout without evaluating.
    os.remove(os.path.join(out, "metrics_step_2.json"))
    eval_binary.main(args)
    assert not os.path.exists(os.path.join(out, "metrics_step_2.json"))


def test_wiring_from_prompt_to_score_with_a_scripted_generator(tmp_path, task_dir, monkeypatch):
    """The model is replaced by a generator that answers from a script, so every step after it
    (decoding, stop strings, answer extraction per form, correctness, metrics) is checked exactly."""
    from orca_jax.data.vocab import ByteVocabulary

    vocab = ByteVocabulary()
    script = {
        "Which is a color?": "Blue is a color. So the answer is (A).\n### User: ignored after the stop string (B)",
        "Which is a fruit?": "So the answer is (C).",  # wrong
        "Is 3 odd?": "Yes.",  # short: parsed without a closing phrase
        "What is 2 + 3?": "I am not sure what the sum of these two numbers is at all.",  # unparsed
    }

    def scripted_generate(model, params, prompts, **kwargs):
        outs = []
        for prompt in prompts:
            text = vocab.decode(prompt)
            question = next(q for q in script if q in text)
            assert text.startswith("### System:\n\n\n### User:\n")  # Orca's template, empty system message
            outs.append(list(vocab.encode(script[question])) + [vocab.eos_id])
        return outs

    monkeypatch.setattr(responses, "generate", scripted_generate)
    run = make_run(tmp_path / "run", steps=(1,))
    suites = evaluator.Suites(task_dirs={"mine": task_dir})
    metrics = evaluator.evaluate(run, suites=suites, generation=evaluator.Generation(batch_size=3))[0]
    assert metrics["mine/colors/accuracy"] == 0.5 and metrics["mine/colors/parsed"] == 1.0
    assert metrics["mine/yes/accuracy"] == 1.0
    assert metrics["mine/sums/accuracy"] == 0.0 and metrics["mine/sums/parsed"] == 0.0
    assert metrics["mine/average"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    rows = [json.loads(line) for line in open(os.path.join(run, "eval", "inferences_step_1.jsonl"))]
    first = next(r for r in rows if r["input"].startswith("Which is a color?"))
    assert "### User" not in first["generation"] and first["answer"] == "A" and first["correct"]


def test_ranking_picks_the_likeliest_option(tmp_path, monkeypatch):
    """With the log-probabilities scripted, the chosen letter is the argmax per example."""
    ex = suites.Example("t/x", "Q?\n(A) a\n(B) b\n(C) c", "(B)", "choice", (("A", "a"), ("B", "b"), ("C", "c")))

    def scripted(model, params, tokens, weights):
        n = tokens.shape[0]
        return jax.numpy.asarray(np.array([-3.0, -1.0, -2.0] * (n // 3 + 1))[:n]), jax.numpy.ones(n)

    from orca_jax.data.templates import get_template
    from orca_jax.data.vocab import ByteVocabulary

    monkeypatch.setattr(responses, "_continuation_logprobs", scripted)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    chosen = responses.rank_options(None, None, mesh, ByteVocabulary(), get_template("orca"), [ex, ex],
                                  system_message="", batch_size=3)  # fmt: skip
    assert chosen == ["B", "B"]


def test_bad_input_gives_one_clear_error_and_no_metrics(tmp_path, task_dir, capsys):
    run = make_run(tmp_path / "run", steps=(2,))
    base = ["--gin_file=configs/runs/eval_mini.gin", f"--gin.CHECKPOINT_DIR={run}", "--gin.Suites.heldout=''"]

    def error_of(*args):
        with pytest.raises(SystemExit) as exit_info:
            eval_binary.main([*base, *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    assert "no such folder" in error_of(f"--gin.Suites.task_dirs={{'mine': '{tmp_path / 'nope'}'}}")
    assert "Generation.max_new_tokens = 0" in error_of(f"--gin.Suites.task_dirs={{'mine': '{task_dir}'}}",
                                                       "--gin.Generation.max_new_tokens=0")  # fmt: skip
    assert "no checkpoint at step 7" in error_of(f"--gin.Suites.task_dirs={{'mine': '{task_dir}'}}",
                                                 "--gin.evaluate.steps=7")  # fmt: skip
    # A checkpoint whose parameters were half written (files missing) is refused, and no metrics appear.
    shutil.rmtree(os.path.join(run, "checkpoints", "2", "params"))
    err = error_of(f"--gin.Suites.task_dirs={{'mine': '{task_dir}'}}")
    assert "checkpoints/2" in err
    assert not os.path.exists(os.path.join(run, "eval", "metrics_step_2.json"))
    with pytest.raises(SystemExit):
        eval_binary.main(["rescore", "--inferences", str(tmp_path / "missing.jsonl")])
    assert "missing.jsonl: cannot read" in capsys.readouterr().err


def test_rescore_reads_generations_against_the_options_the_evaluation_used():
    """AGIEval writes its options on one line of the input; the row's own options let rescore read
    a reply that names an option by its text, as the evaluation did."""
    user, _ = suites.agieval_prompt(None, "Which park?", ["(A)Civic Park", "(B)Elm Park"])
    row = {"task": "agieval/lsat-lr", "input": user, "target": "B", "generation": " Elm Park."}
    _, [rescored] = evaluator.rescore([{**row, "options": {"A": "Civic Park", "B": "Elm Park"}}], "rows.jsonl")
    assert rescored["answer"] == "B" and rescored["correct"]
    _, [older] = evaluator.rescore([row], "rows.jsonl")  # a row written before rows kept their options
    assert not older["correct"]
