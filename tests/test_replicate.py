"""The replicate study's bookkeeping: mean and spread over seeds, the results table, the curves PNG."""

import pytest

from orca_jax import replicate


def metrics(explain: float, answer: float) -> dict:
    return {"step": 4.0, "mini_orca/sums/accuracy": explain, "mini_orca/average": explain,
            "mini_orca/average_parsed": 1.0, "mini_orca_hard/sums/accuracy": answer,
            "mini_orca_hard/average": answer, "heldout/loss": 0.3}  # fmt: skip


def test_summary_is_mean_and_spread_over_seeds_and_the_table_shows_it(tmp_path):
    runs = {"explain": {0: metrics(0.8, 0.4), 1: metrics(0.6, 0.2)}, "answer_only": {0: metrics(0.1, 0.0)}}
    summary = replicate.summarize(runs)
    assert summary["explain"]["mini_orca/average"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.1), "n": 2}
    assert "heldout/loss" not in summary["explain"]
    table = replicate.markdown_table(summary, "make replicate", 600.0, [0, 1])
    assert "| task | answer_only | explain |" in table
    assert "| **average** | 10.0 ± 0.0 | 70.0 ± 10.0 |" in table
    assert "## harder variants (mini_orca_hard)" in table and "10.0 minutes" in table


def test_curves_png_is_written(tmp_path):
    curves = {"explain": [[(10, 2.0), (20, 1.0)], [(10, 2.2), (20, 0.8)]], "answer_only": [[(10, 3.0), (20, 2.5)]]}
    path = tmp_path / "curves.png"
    replicate.plot_curves(curves, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
