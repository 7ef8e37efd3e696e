"""orca-replicate: Orca's two claims in miniature, measured on this machine (what `make replicate` runs).

    python -m orca_jax.replicate [--seeds 0,1,2] [--work replicate_runs] [--results results]

Trains three students of the same model with equal compute (the same steps, batch and rows) on the
mini-Orca data, each for every seed, with the binaries a user would run:

    answer_only   configs/runs/mini_orca_answer_only.gin   the teacher's answers alone
    explain       configs/runs/mini_orca_explain.gin       the strong teacher's explanations
    progressive   configs/runs/mini_orca_progressive.gin   the intermediate teacher for half the steps,
                  then ..._stage2.gin                      the strong teacher for the other half

then evaluates each with `orca-eval` (configs/runs/eval_mini.gin: exact match of the answer on the
held-out questions, in-distribution and harder variants), and writes:

    RESULTS/mini_orca.json   every run's metrics, and per student the mean and spread over seeds
    RESULTS/mini_orca.md     the table: per task and average, mean ± standard deviation over seeds
    RESULTS/mini_orca.png    the training curves (loss on response tokens), mean over seeds

Every command it runs is printed. A finished run (its metrics file exists) is not run again, so an
interrupted replicate picks up where it stopped.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

from orca_jax.errors import UserError, exit_on_user_error

STUDENTS = ("answer_only", "explain", "progressive")
SUITES = (("mini_orca", "in-distribution"), ("mini_orca_hard", "harder variants"))


def run(args: list[str]) -> None:
    command = [sys.executable, "-m", *args]
    print("$ " + " ".join(command[2:]), flush=True)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"this command failed (its output is above): {' '.join(command[2:])}")


def train_and_evaluate(student: str, seed: int, data_dir: str, work: str, steps: int) -> dict:
    """Trains one student at one seed (skipped when already evaluated) and returns its metrics."""
    model_dir = os.path.join(work, f"{student}_seed{seed}")
    done = sorted(glob.glob(os.path.join(model_dir, "eval", "metrics_step_*.json")))
    if not done:
        common = [f"--gin.DATA_DIR={data_dir}", f"--gin.SEED={seed}"]
        if student == "progressive":
            stage1 = os.path.join(work, f"progressive_stage1_seed{seed}")
            run(["orca_jax.train", "--gin_file=configs/runs/mini_orca_progressive.gin", f"--gin.MODEL_DIR={stage1}",
                 f"--gin.NUM_STEPS={steps // 2}", *common])  # fmt: skip
            run(["orca_jax.train", "--gin_file=configs/runs/mini_orca_progressive_stage2.gin",
                 f"--gin.MODEL_DIR={model_dir}", f"--gin.STAGE1_DIR={stage1}", f"--gin.NUM_STEPS={steps - steps // 2}",
                 *common])  # fmt: skip
        else:
            run(["orca_jax.train", f"--gin_file=configs/runs/mini_orca_{student}.gin", f"--gin.MODEL_DIR={model_dir}",
                 f"--gin.NUM_STEPS={steps}", *common])  # fmt: skip
        run(["orca_jax.eval", "--gin_file=configs/runs/eval_mini.gin", f"--gin.CHECKPOINT_DIR={model_dir}",
             f"--gin.DATA_DIR={data_dir}"])  # fmt: skip
        done = sorted(glob.glob(os.path.join(model_dir, "eval", "metrics_step_*.json")))
    with open(done[-1]) as f:
        return json.load(f)


def training_curve(work: str, student: str, seed: int) -> list[tuple[int, float]]:
    """(step, loss) over the whole run; a progressive run's stage 2 continues stage 1's step count."""

    def read(model_dir: str, offset: int) -> list[tuple[int, float]]:
        with open(os.path.join(model_dir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [(offset + r["step"], r["loss"]) for r in rows if "loss" in r]

    if student != "progressive":
        return read(os.path.join(work, f"{student}_seed{seed}"), 0)
    first = read(os.path.join(work, f"progressive_stage1_seed{seed}"), 0)
    return first + read(os.path.join(work, f"progressive_seed{seed}"), first[-1][0] if first else 0)


def summarize(metrics: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """student -> metric -> {mean, std, n} over seeds, for every accuracy and parsed-rate metric."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for student, by_seed in metrics.items():
        keys = sorted(set.intersection(*(set(m) for m in by_seed.values())))
        out[student] = {}
        for key in keys:
            if key.endswith(("/accuracy", "/average", "/parsed", "/average_parsed")):
                values = np.array([by_seed[s][key] for s in sorted(by_seed)], dtype=float)
                out[student][key] = {"mean": float(values.mean()), "std": float(values.std(ddof=0)), "n": len(values)}
    return out


def markdown_table(summary: dict, command: str, wall_seconds: float, seeds: list[int]) -> str:
    lines = [f"# mini-Orca: explanation tuning vs answer imitation, {len(seeds)} seeds ({', '.join(map(str, seeds))})",
             "", f"Made by `{command}` in {wall_seconds / 60:.1f} minutes on this machine.",
             "Exact-match accuracy (%) of the answer read from each greedy generation; mean ± standard deviation "
             "over seeds.", ""]  # fmt: skip
    students = [s for s in STUDENTS if s in summary]
    for suite, title in SUITES:
        tasks = sorted({k.split("/")[1] for s in students for k in summary[s]
                        if k.startswith(suite + "/") and k.endswith("/accuracy")})  # fmt: skip
        if not tasks:
            continue
        lines += [f"## {title} ({suite})", "", "| task | " + " | ".join(students) + " |",
                  "|---|" + "---|" * len(students)]  # fmt: skip
        for task in [*tasks, "average"]:
            key = f"{suite}/{task}/accuracy" if task != "average" else f"{suite}/average"
            cells = []
            for s in students:
                v = summary[s].get(key)
                cells.append(f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}" if v else "-")
            name = f"**{task}**" if task == "average" else task
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parsed = [summary[s].get(f"{suite}/average_parsed") for s in students]
        lines.append("| answers parsed | " + " | ".join(f"{100 * p['mean']:.1f}" if p else "-" for p in parsed) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[list[tuple[int, float]]]], path: str) -> None:
    """Mean training loss per student against step, as a PNG (PIL; no plotting library needed)."""
    from PIL import Image, ImageDraw

    width, height, margin = 900, 500, 60
    colors = {"answer_only": (200, 60, 60), "explain": (40, 110, 200), "progressive": (40, 160, 80)}
    means = {}
    for student, runs in curves.items():
        steps = sorted(set.intersection(*(set(s for s, _ in run) for run in runs))) if runs else []
        means[student] = [(s, float(np.mean([dict(run)[s] for run in runs]))) for s in steps]
    points = [p for series in means.values() for p in series]
    if not points:
        return
    max_step = max(s for s, _ in points)
    losses = np.log10([max(loss, 1e-4) for _, loss in points])
    low, high = float(losses.min()), float(losses.max()) + 1e-9
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, margin // 2, width - margin // 2, height - margin], outline="black")

    def xy(step: int, loss: float) -> tuple[float, float]:
        y = (np.log10(max(loss, 1e-4)) - low) / (high - low)
        return (margin + step / max_step * (width - 1.5 * margin), height - margin - y * (height - 1.5 * margin))

    for i, (student, series) in enumerate(means.items()):
        if len(series) > 1:
            draw.line([xy(s, v) for s, v in series], fill=colors.get(student, "black"), width=2)
        draw.text((width - 240, margin // 2 + 10 + 16 * i), student, fill=colors.get(student, "black"))
    draw.text((margin, height - margin + 10), f"step 0 .. {max_step}", fill="black")
    draw.text((5, margin // 2), f"loss {10**high:.3g}", fill="black")
    draw.text((5, height - margin - 10), f"{10**low:.3g} (log)", fill="black")
    image.save(path)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="orca-replicate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--seeds", default="0,1,2", help="training seeds (parameter init and data order)")
    p.add_argument(
        "--steps",
        type=int,
        default=600,
        help="training steps per student, as mini_orca_explain.gin (progressive: split in two)",
    )
    p.add_argument("--work", default="replicate_runs", help="where the data and the runs go")
    p.add_argument("--results", default="results", help="where mini_orca.{md,json,png} go")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or args.steps < 2:
        raise UserError("--seeds needs at least one seed and --steps at least 2")
    start = time.time()
    data_dir = os.path.join(args.work, "data")
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        run(["orca_jax.data.cli", "generate-mini", "--out", data_dir])
    metrics: dict[str, dict[int, dict]] = {s: {} for s in STUDENTS}
    curves: dict[str, list] = {s: [] for s in STUDENTS}
    for seed in seeds:
        for student in STUDENTS:
            metrics[student][seed] = train_and_evaluate(student, seed, data_dir, args.work, args.steps)
            curves[student].append(training_curve(args.work, student, seed))
    summary = summarize(metrics)
    wall = time.time() - start
    command = "make replicate" if argv is None and os.environ.get("MAKELEVEL") else "python -m orca_jax.replicate"
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "mini_orca.json"), "w") as f:
        runs = {s: {str(k): v for k, v in m.items()} for s, m in metrics.items()}
        record = {"seeds": seeds, "steps": args.steps, "wall_seconds": wall, "summary": summary, "runs": runs}
        json.dump(record, f, indent=1)
    table = markdown_table(summary, command, wall, seeds)
    with open(os.path.join(args.results, "mini_orca.md"), "w") as f:
        f.write(table + "\n")
    plot_curves(curves, os.path.join(args.results, "mini_orca.png"))
    print(table)
    print(f"\nwritten: {args.results}/mini_orca.md, mini_orca.json, mini_orca.png ({wall / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
