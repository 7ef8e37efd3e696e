"""orca-replicate: Orca's two claims in miniature, measured on this machine (what `make replicate` runs).

    python -m orca_jax.replicate [--seeds 0,1,2] [--work replicate_runs] [--results results]
    python -m orca_jax.replicate --compare MODEL_DIR [--results results]

Trains three students of the same model with equal compute (the same steps of the same batch of
rows: the same number of token slots) on the mini-Orca data, each for every seed, with the
binaries a user would run:

    answer_only   configs/runs/mini_orca_answer_only.gin   the teacher's answers alone
    explain       configs/runs/mini_orca_explain.gin       the strong teacher's explanations
    progressive   configs/runs/mini_orca_progressive.gin   the intermediate teacher for half the steps,
                  then ..._stage2.gin                      the strong teacher for the other half

then evaluates each with `orca-eval` (configs/runs/eval_mini.gin: exact match of the answer on the
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
import collections
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

from orca_jax import replicate_plots
from orca_jax.errors import UserError, exit_on_user_error
from orca_jax.evaluation import answers

STUDENTS = ("answer_only", "explain", "progressive")
LABELS = {"answer_only": "answer-only", "explain": "explanations", "progressive": "progressive"}
SUITES = (("mini_orca", "bbh", "in-distribution"), ("mini_orca_hard", "bbh_hard", "harder variants"))


def run(args: list[str]) -> None:
    command = [sys.executable, "-m", *args]
    print("$ " + " ".join(command[2:]), flush=True)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"this command failed (its output is above): {' '.join(command[2:])}")


def stage_dirs(work: str, student: str, seed: int) -> list[str]:
    """The MODEL_DIRs of a student's training stages, in order; the last one is evaluated."""
    last = os.path.join(work, f"{student}_seed{seed}")
    return [os.path.join(work, f"progressive_stage1_seed{seed}"), last] if student == "progressive" else [last]


def train_and_evaluate(student: str, seed: int, data_dir: str, work: str, steps: int) -> dict:
    """Trains one student at one seed (skipped when already evaluated) and returns its metrics.
    `steps` 0 keeps the run configs' own NUM_STEPS."""
    dirs = stage_dirs(work, student, seed)
    done = sorted(glob.glob(os.path.join(dirs[-1], "eval", "metrics_step_*.json")))
    if not done:
        common = [f"--gin.DATA_DIR={data_dir}", f"--gin.SEED={seed}"]

        def num_steps(n: int) -> list[str]:
            return [f"--gin.NUM_STEPS={n}"] if steps else []

        if student == "progressive":
            run(["orca_jax.train", "--gin_file=configs/runs/mini_orca_progressive.gin", f"--gin.MODEL_DIR={dirs[0]}",
                 *num_steps(steps // 2), *common])  # fmt: skip
            run(["orca_jax.train", "--gin_file=configs/runs/mini_orca_progressive_stage2.gin",
                 f"--gin.MODEL_DIR={dirs[1]}", f"--gin.STAGE1_DIR={dirs[0]}", *num_steps(steps - steps // 2),
                 *common])  # fmt: skip
        else:
            run(["orca_jax.train", f"--gin_file=configs/runs/mini_orca_{student}.gin", f"--gin.MODEL_DIR={dirs[0]}",
                 *num_steps(steps), *common])  # fmt: skip
        run(["orca_jax.eval", "--gin_file=configs/runs/eval_mini.gin", f"--gin.CHECKPOINT_DIR={dirs[-1]}",
             f"--gin.DATA_DIR={data_dir}"])  # fmt: skip
        done = sorted(glob.glob(os.path.join(dirs[-1], "eval", "metrics_step_*.json")))
    with open(done[-1]) as f:
        return json.load(f)


def read_metrics(model_dir: str) -> list[dict]:
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def compute_spent(dirs: list[str]) -> dict[str, float]:
    """Steps, token slots (rows x row length, padding included) and questions (packed examples)
    over a student's stages, from the training metrics each log step wrote."""
    steps = slots = questions = 0.0
    for model_dir in dirs:
        previous = 0
        for row in read_metrics(model_dir):
            if "loss" not in row:  # a validation row
                continue
            n = row["step"] - previous
            steps, previous = steps + n, row["step"]
            slots += n * row["row_slots_per_step"]
            questions += n * row["examples_per_step"]
    return {"steps": steps, "token_slots": slots, "questions": round(questions)}


def check_equal_compute(compute: dict[str, dict[int, dict]]) -> None:
    """Every student at every seed spent the same token slots, or the comparison means nothing."""
    spent = {(s, seed): c["token_slots"] for s, by_seed in compute.items() for seed, c in by_seed.items()}
    if len(set(spent.values())) > 1:
        raise UserError(f"the students did not spend equal compute (token slots per student and seed: {spent}); "
                        "delete the work folder's runs and replicate again")  # fmt: skip


def training_curve(dirs: list[str]) -> list[tuple[int, float]]:
    """(step, loss) over the whole run; a later stage continues the earlier one's step count."""
    curve: list[tuple[int, float]] = []
    for model_dir in dirs:
        offset = curve[-1][0] if curve else 0
        curve += [(offset + r["step"], r["loss"]) for r in read_metrics(model_dir) if "loss" in r]
    return curve


def baselines(data_dir: str) -> dict[str, dict[str, float]]:
    """Per suite/family: the commonest held-out answer's share (the best any constant answer scores)
    and the expected accuracy of a uniform guess among the answers the form allows (0 for free text
    and numbers, whose answers are not a short list)."""
    out = {}
    for suite, folder, _ in SUITES:
        for path in sorted(glob.glob(os.path.join(data_dir, folder, "*.json"))):
            family = os.path.splitext(os.path.basename(path))[0]
            with open(path) as f:
                examples = json.load(f)["examples"]
            targets = [ex["target"] for ex in examples]
            form = answers.infer_form(targets)
            if form == "choice":
                guess = float(np.mean([1 / max(len(answers.options_in(ex["input"])), 1) for ex in examples]))
            else:
                guess = 1 / len(answers.WORDS[form]) if form in answers.WORDS else 0.0
            commonest = collections.Counter(targets).most_common(1)[0][1] / len(targets)
            out[f"{suite}/{family}"] = {"commonest": commonest, "uniform": guess}
    return out


def average_baseline(base: dict, suite: str, families: list[str]) -> dict[str, float]:
    """The baselines of a suite's average accuracy: the mean of its families' baselines."""
    return {k: float(np.mean([base.get(f"{suite}/{f}", {}).get(k, 0.0) for f in families]))
            for k in ("commonest", "uniform")}  # fmt: skip


def summarize(metrics: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """student -> metric -> {mean, std, n, seeds} over seeds, for every accuracy and parsed-rate metric
    and the held-out loss on the strong teacher's responses."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for student, by_seed in metrics.items():
        if not by_seed:
            continue
        keys = sorted(set.intersection(*(set(m) for m in by_seed.values())))
        out[student] = {}
        for key in keys:
            if key.endswith(("/accuracy", "/average", "/parsed", "/average_parsed")) or key == "heldout/loss":
                values = [float(by_seed[s][key]) for s in sorted(by_seed)]
                out[student][key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values),
                                     "seeds": values}  # fmt: skip
    return out


def families_of(summary: dict, suite: str) -> list[str]:
    return sorted({k.split("/")[1] for by_key in summary.values() for k in by_key
                   if k.startswith(suite + "/") and k.endswith("/accuracy")})  # fmt: skip


def pct(v: dict | None) -> str:
    return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}" if v else "-"


def bar_lines(summary: dict) -> list[str]:
    """The study's claims as numbers: the gaps, and whether the seeds overlap."""
    lines = []
    ans, exp, prog = (summary.get(s, {}) for s in STUDENTS)
    for suite, _, title in SUITES:
        a, e, p = (x.get(f"{suite}/average") for x in (ans, exp, prog))
        if a and e:
            lines.append(f"- {title}: explanations - answer-only = {100 * (e['mean'] - a['mean']):+.1f} points; "
                         f"lowest explanation seed {100 * min(e['seeds']):.1f}%, highest answer-only seed "
                         f"{100 * max(a['seeds']):.1f}%.")  # fmt: skip
        if e and p:
            lines.append(f"- {title}: progressive - explanations = {100 * (p['mean'] - e['mean']):+.1f} points "
                         f"(explanations' standard deviation {100 * e['std']:.1f}).")  # fmt: skip
    return lines


def markdown_report(summary: dict, base: dict, compute: dict, command: str, wall_seconds: float,
                    seeds: list[int]) -> str:  # fmt: skip
    students = [s for s in STUDENTS if s in summary]
    count = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    lines = [f"# mini-Orca: explanation tuning vs answer imitation, {count} ({', '.join(map(str, seeds))})",
             "", f"Made by `{command}` in {wall_seconds / 60:.1f} minutes on this machine.",
             "Exact-match accuracy (%) of the answer read from each greedy generation, mean ± standard deviation "
             "over seeds, beside two baselines: the commonest held-out answer given to every question, and a "
             "uniform guess among the answers the family allows.", ""]  # fmt: skip
    for suite, _, title in SUITES:
        families = families_of(summary, suite)
        if not families:
            continue
        lines += [f"## {title} ({suite})", "",
                  "| family | commonest answer | uniform guess | " + " | ".join(LABELS[s] for s in students) + " |",
                  "|---|---|---|" + "---|" * len(students)]  # fmt: skip
        for family in families:
            b = base.get(f"{suite}/{family}", {})
            cells = [pct(summary[s].get(f"{suite}/{family}/accuracy")) for s in students]
            lines.append(f"| {family} | {100 * b.get('commonest', 0):.0f} | {100 * b.get('uniform', 0):.0f} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        mean_base = average_baseline(base, suite, families)
        cells = [f"**{pct(summary[s].get(f'{suite}/average'))}**" for s in students]
        lines.append(
            f"| **average** | {100 * mean_base['commonest']:.0f} | {100 * mean_base['uniform']:.0f} | "
            + " | ".join(cells)
            + " |"
        )
        parsed = [summary[s].get(f"{suite}/average_parsed") for s in students]
        lines.append(
            "| answers parsed | | | " + " | ".join(f"{100 * p['mean']:.1f}" if p else "-" for p in parsed) + " |"
        )
        lines.append("")
    losses = [summary[s].get("heldout/loss") for s in students]
    if any(losses):
        lines += ["Held-out loss on the strong teacher's responses (how well each student writes the explanations): "
                  + ", ".join(f"{LABELS[s]} {v['mean']:.3f}" for s, v in zip(students, losses, strict=True) if v) + ".",
                  ""]  # fmt: skip
    lines += ["## The claims, as measured", "", *bar_lines(summary), "", "## Compute (per student and seed)", "",
              "| student | steps | token slots | questions seen |", "|---|---|---|---|"]  # fmt: skip
    for s in students:
        runs = compute.get(s, {})
        if runs:
            c = next(iter(runs.values()))
            q = [r["questions"] for r in runs.values()]
            lines.append(f"| {LABELS[s]} | {c['steps']:.0f} | {c['token_slots']:,.0f} | "
                         f"{min(q):,}-{max(q):,} |" if min(q) != max(q) else f"| {LABELS[s]} | {c['steps']:.0f} | "
                         f"{c['token_slots']:,.0f} | {q[0]:,} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def compare(model_dir: str, results: str) -> str:
    """An evaluated run's accuracy per family beside the study's students (from RESULTS/mini_orca.json)."""
    found = sorted(glob.glob(os.path.join(model_dir, "eval", "metrics_step_*.json")),
                   key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))  # fmt: skip
    if not found:
        raise UserError(f"{model_dir}: no eval/metrics_step_*.json; run orca-eval on it first")
    path = os.path.join(results, "mini_orca.json")
    if not os.path.exists(path):
        raise UserError(f"{path}: not found; run `make replicate` to make it")
    with open(found[-1]) as f:
        mine = json.load(f)
    with open(path) as f:
        study = json.load(f)
    if not {"summary", "baselines", "seeds", "steps"} <= set(study):
        raise UserError(f"{path}: not a study this orca_jax wrote (no summary or baselines); run `make replicate`")
    summary, base = study["summary"], study["baselines"]
    students = [s for s in STUDENTS if s in summary]
    seeds = ", ".join(map(str, study["seeds"]))
    lines = [f"This run ({model_dir}, step {mine['step']:.0f}) beside the mini-Orca study in {path} "
             f"(seeds {seeds}, {study['steps']} steps per student; mean ± standard deviation over seeds):"]  # fmt: skip
    for suite, _, title in SUITES:
        families = families_of(summary, suite)
        if not families:
            continue
        head = ["family", "this run", *(f"study: {LABELS[s]}" for s in students), "commonest", "uniform"]
        rows = []
        for family in [*families, "average"]:
            key = f"{suite}/{family}/accuracy" if family != "average" else f"{suite}/average"
            b = base.get(f"{suite}/{family}") or average_baseline(base, suite, families)
            mine_v = f"{100 * mine[key]:.1f}" if key in mine else "-"
            baseline = [f"{100 * b['commonest']:.0f}", f"{100 * b['uniform']:.0f}"] if b else ["", ""]
            rows.append([family, mine_v, *(pct(summary[s].get(key)) for s in students), *baseline])
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        lines += ["", f"{title} ({suite}), accuracy %:"]
        lines += [("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()
                  for r in [head, *rows]]  # fmt: skip
    return "\n".join(lines)


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
        print(compare(args.compare, args.results))
        return
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or args.steps == 1 or args.steps < 0:
        raise UserError("--seeds needs at least one seed and --steps at least 2")
    start = time.time()
    data_dir = os.path.join(args.work, "data")
    if not os.path.exists(os.path.join(data_dir, "tokenizer.model")):
        run(["orca_jax.data.cli", "generate-mini", "--out", data_dir])
    metrics: dict[str, dict[int, dict]] = {s: {} for s in STUDENTS}
    compute: dict[str, dict[int, dict]] = {s: {} for s in STUDENTS}
    curves: dict[str, list] = {s: [] for s in STUDENTS}
    for seed in seeds:
        for student in STUDENTS:
            metrics[student][seed] = train_and_evaluate(student, seed, data_dir, args.work, args.steps)
            compute[student][seed] = compute_spent(stage_dirs(args.work, student, seed))
            curves[student].append(training_curve(stage_dirs(args.work, student, seed)))
    check_equal_compute(compute)
    summary, base = summarize(metrics), baselines(data_dir)
    wall = time.time() - start
    command = "make replicate" if argv is None and os.environ.get("MAKELEVEL") else "python -m orca_jax.replicate"
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "mini_orca.json"), "w") as f:
        runs = {s: {str(k): v for k, v in m.items()} for s, m in metrics.items()}
        spent = {s: {str(k): v for k, v in c.items()} for s, c in compute.items()}
        steps = next(iter(compute["explain"].values()))["steps"]
        record = {"seeds": seeds, "steps": steps, "wall_seconds": wall, "baselines": base, "summary": summary,
                  "compute": spent, "runs": runs}  # fmt: skip
        json.dump(record, f, indent=1)
    report = markdown_report(summary, base, compute, command, wall, seeds)
    with open(os.path.join(args.results, "mini_orca.md"), "w") as f:
        f.write(report)
    replicate_plots.write_png(summary, base, curves, os.path.join(args.results, "mini_orca.png"),
                              [(suite, title) for suite, _, title in SUITES], LABELS)  # fmt: skip
    print(report)
    print(f"written: {args.results}/mini_orca.md, mini_orca.json, mini_orca.png ({wall / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
