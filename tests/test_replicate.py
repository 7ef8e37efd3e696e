"""The replicate study's bookkeeping: baselines, compute from the training metrics, mean and spread over
seeds, the report, the picture, and the demo's comparison."""

import json
import os

import pytest

from orca_jax.cli import replicate
from orca_jax.errors import UserError
from orca_jax.study import plots, report, runs


def metrics(explain: float, answer: float) -> dict:
    return {"step": 4.0, "mini_orca/sums/accuracy": explain, "mini_orca/average": explain,
            "mini_orca/average_parsed": 1.0, "mini_orca_hard/sums/accuracy": answer,
            "mini_orca_hard/average": answer, "heldout/loss": 0.3}  # fmt: skip


def write_json(path, value) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f)
    return str(path)


def test_summary_is_mean_and_spread_over_seeds_and_the_report_shows_it():
    by_seed = {"explain": {0: metrics(0.8, 0.4), 1: metrics(0.6, 0.2)}, "answer_only": {0: metrics(0.1, 0.0)}}
    summary = report.summarize(by_seed)
    assert summary["explain"]["mini_orca/average"] == {
        "mean": pytest.approx(0.7), "std": pytest.approx(0.1), "n": 2, "seeds": [0.8, 0.6]}  # fmt: skip
    assert summary["explain"]["heldout/loss"]["mean"] == pytest.approx(0.3) and "step" not in summary["explain"]
    base = {"mini_orca/sums": {"commonest": 0.02, "uniform": 0.0}, "mini_orca_hard/sums": {"commonest": 0.5,
                                                                                          "uniform": 0.5}}  # fmt: skip
    compute = {"explain": {0: {"steps": 4, "token_slots": 100, "questions": 7}, 1: {"steps": 4, "token_slots": 100,
               "questions": 9}}, "answer_only": {0: {"steps": 4, "token_slots": 100, "questions": 30}}}  # fmt: skip
    text = report.markdown_report(summary, base, compute, "make replicate", 600.0, [0, 1])
    assert "| family | commonest answer | uniform guess | answer-only | explanations |" in text
    assert "| sums | 2 | 0 | 10.0 ± 0.0 | 70.0 ± 10.0 |" in text
    assert "| **average** | 2 | 0 | **10.0 ± 0.0** | **70.0 ± 10.0** |" in text
    assert "## harder variants (mini_orca_hard)" in text and "10.0 minutes" in text
    assert "explanations - answer-only = +60.0 points; lowest explanation seed 60.0%, highest answer-only seed 10.0%" \
        in text  # fmt: skip
    assert "Held-out loss on the strong teacher's responses" in text and "explanations 0.300" in text
    assert "| explanations | 4 | 100 | 7-9 |" in text and "| answer-only | 4 | 100 | 30 |" in text


def test_baselines_are_the_commonest_answer_and_a_uniform_guess(tmp_path):
    data = tmp_path / "data"
    choice = [{"input": "Q\nOptions:\n(A) x\n(B) y\n(C) z", "target": t} for t in ("(A)", "(A)", "(B)", "(C)")]
    write_json(data / "bbh" / "pick.json", {"examples": choice})
    write_json(data / "bbh" / "truth.json", {"examples": [{"input": "q", "target": t} for t in ("True", "False")]})
    write_json(data / "bbh_hard" / "sums.json", {"examples": [{"input": "q", "target": t} for t in ("12", "13", "12")]})
    base = report.baselines(str(data))
    assert base["mini_orca/pick"] == {"commonest": 0.5, "uniform": pytest.approx(1 / 3)}
    assert base["mini_orca/truth"] == {"commonest": 0.5, "uniform": 0.5}
    assert base["mini_orca_hard/sums"] == {"commonest": pytest.approx(2 / 3), "uniform": 0.0}


def write_metrics(model_dir, rows) -> None:
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "metrics.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def log_row(step, examples, loss=1.0):
    return {"step": step, "loss": loss, "examples_per_step": examples, "row_slots_per_step": 3072.0}


def test_compute_adds_every_stage_and_unequal_compute_is_refused(tmp_path):
    work = str(tmp_path)
    write_metrics(os.path.join(work, "explain_seed0"), [log_row(50, 20.0), log_row(100, 22.0)])
    write_metrics(
        os.path.join(work, "progressive_stage1_seed0"), [log_row(50, 30.0), {"step": 50, "validation/loss": 2}]
    )
    write_metrics(os.path.join(work, "progressive_seed0"), [log_row(50, 21.0, loss=0.5)])
    explain = runs.compute_spent(runs.stage_dirs(work, "explain", 0))
    progressive = runs.compute_spent(runs.stage_dirs(work, "progressive", 0))
    assert explain == {"steps": 100, "token_slots": 100 * 3072, "questions": 50 * 20 + 50 * 22}
    assert progressive == {"steps": 100, "token_slots": 100 * 3072, "questions": 50 * 30 + 50 * 21}
    runs.check_equal_compute({"explain": {0: explain}, "progressive": {0: progressive}})
    assert runs.training_curve(runs.stage_dirs(work, "progressive", 0)) == [(50, 1.0), (100, 0.5)]
    with pytest.raises(UserError, match="did not spend equal compute"):
        runs.check_equal_compute({"explain": {0: explain}, "answer_only": {0: {**explain, "token_slots": 9}}})


def test_png_is_written(tmp_path):
    summary = report.summarize({"explain": {0: metrics(0.8, 0.4), 1: metrics(0.6, 0.2)},
                                   "answer_only": {0: metrics(0.1, 0.0)}})  # fmt: skip
    curves = {"explain": [[(10, 2.0), (20, 1.0)], [(10, 2.2), (20, 0.8)]], "answer_only": [[(10, 3.0), (20, 2.5)]]}
    path = tmp_path / "study.png"
    suites = [(suite, title) for suite, _, title in runs.SUITES]
    base = {"mini_orca/sums": {"commonest": 0.3, "uniform": 0.0}}
    plots.write_png(summary, base, curves, str(path), suites, runs.LABELS)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_prints_a_run_beside_the_study(tmp_path, capsys):
    summary = report.summarize({s: {0: metrics(v, v / 2)} for s, v in
                                   (("answer_only", 0.1), ("explain", 0.9), ("progressive", 0.8))})  # fmt: skip
    study = {"seeds": [0], "steps": 900, "summary": summary,
             "baselines": {"mini_orca/sums": {"commonest": 0.02, "uniform": 0.0}}}  # fmt: skip
    write_json(tmp_path / "results" / "mini_orca.json", study)
    run = tmp_path / "run"
    write_json(run / "eval" / "metrics_step_900.json", {**metrics(0.85, 0.5), "step": 900.0})
    write_json(run / "eval" / "metrics_step_100.json", {**metrics(0.05, 0.0), "step": 100.0})
    replicate.main(["--compare", str(run), "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert "step 900" in out and "study: answer-only" in out and "study: progressive" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("sums"))
    assert row.split() == ["sums", "85.0", "10.0", "±", "0.0", "90.0", "±", "0.0", "80.0", "±", "0.0", "2", "0"]
    with pytest.raises(SystemExit) as e:  # no study to compare with: one line, exit 2
        replicate.main(["--compare", str(run), "--results", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "make replicate" in capsys.readouterr().err
