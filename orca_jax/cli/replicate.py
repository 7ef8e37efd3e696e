"""orca-replicate: Orca's two claims in miniature, measured on this machine (what `make replicate` runs).

    python -m orca_jax.cli.replicate [--seeds 0,1,2] [--work replicate_runs] [--results results]
    python -m orca_jax.cli.replicate --compare MODEL_DIR [--results results]

Trains three students of the same model with equal compute (the same steps of the same batch of
rows: the same number of token slots) on the mini-Orca data, each for every seed, with the
binaries a user would run (the students and their configs: orca_jax/study/runs.py), then
evaluates each with `orca-eval` (configs/runs/eval_mini.gin: exact match of the answer on the
held-out questions, in-distribution and harder variants), checks from each run's metrics that the
students spent the same token slots (and counts the questions each saw), and writes:

    RESULTS/mini_orca.json   every run's metrics and compute, per student the mean and spread over
                             seeds, and per family the commonest-answer and uniform-guess baselines
    RESULTS/mini_orca.md     the tables: per family and average, mean ± standard deviation over seeds,
                             beside the baselines; the compute each student spent
    RESULTS/mini_orca.png    accuracy per family and student (bars: mean; dots: seeds), and the
                             training loss curves

Every command it runs is printed. A finished run (its metrics file exists) is not run again, so an
interrupted replicate picks up where it stopped. `--compare MODEL_DIR` prints an evaluated run's
accuracies beside the study's students from RESULTS/mini_orca.json (what `make demo` ends with).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from orca_jax.errors import UserError, exit_on_user_error
from orca_jax.study import plots, report, runs


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="orca-replicate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--seeds", default="0,1,2", help="training seeds (parameter init and data order)")
    p.add_argument("--steps", type=int, default=0,
                   help="training steps per student, progressive's split in two (default: the run configs' own, "
                        "the demo's budget)")  # fmt: skip
    p.add_argument("--work", default="replicate_runs", help="where the data and the runs go")
    p.add_argument("--results", default="results", help="where mini_orca.{md,json,png} go")
    p.add_argument("--compare", default="", metavar="MODEL_DIR",
                   help="print this evaluated run beside RESULTS/mini_orca.json, and nothing else")  # fmt: skip
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.compare:
        print(report.compare(args.compare, args.results))
        return
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or args.steps == 1 or args.steps < 0:
        raise UserError("--seeds needs at least one seed and --steps at least 2")
    start = time.time()
    data_dir = os.path.join(args.work, "data")
    if not os.path.exists(os.path.join(data_dir, "tokenizer.model")):
        runs.run(["orca_jax.cli.data", "generate-mini", "--out", data_dir])
    metrics: dict[str, dict[int, dict]] = {s: {} for s in runs.STUDENTS}
    compute: dict[str, dict[int, dict]] = {s: {} for s in runs.STUDENTS}
    curves: dict[str, list] = {s: [] for s in runs.STUDENTS}
    for seed in seeds:
        for student in runs.STUDENTS:
            metrics[student][seed] = runs.train_and_evaluate(student, seed, data_dir, args.work, args.steps)
            compute[student][seed] = runs.compute_spent(runs.stage_dirs(args.work, student, seed))
            curves[student].append(runs.training_curve(runs.stage_dirs(args.work, student, seed)))
    runs.check_equal_compute(compute)
    summary, base = report.summarize(metrics), report.baselines(data_dir)
    wall = time.time() - start
    command = "make replicate" if argv is None and os.environ.get("MAKELEVEL") else "python -m orca_jax.cli.replicate"
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "mini_orca.json"), "w") as f:
        evals = {s: {str(k): v for k, v in m.items()} for s, m in metrics.items()}
        spent = {s: {str(k): v for k, v in c.items()} for s, c in compute.items()}
        steps = next(iter(compute["explain"].values()))["steps"]
        record = {"seeds": seeds, "steps": steps, "wall_seconds": wall, "baselines": base, "summary": summary,
                  "compute": spent, "runs": evals}  # fmt: skip
        json.dump(record, f, indent=1)
    text = report.markdown_report(summary, base, compute, command, wall, seeds)
    with open(os.path.join(args.results, "mini_orca.md"), "w") as f:
        f.write(text)
    plots.write_png(summary, base, curves, os.path.join(args.results, "mini_orca.png"),
                    [(suite, title) for suite, _, title in runs.SUITES], runs.LABELS)  # fmt: skip
    print(text)
    print(f"written: {args.results}/mini_orca.md, mini_orca.json, mini_orca.png ({wall / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
