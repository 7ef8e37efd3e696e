"""The mini-Orca study's runs: each student trained and evaluated with the binaries a user would run,
and the compute each spent, read back from its metrics.

    answer_only   configs/runs/mini_orca_answer_only.gin   the teacher's answers alone
    explain       configs/runs/mini_orca_explain.gin       the strong teacher's explanations
    progressive   configs/runs/mini_orca_progressive.gin   the intermediate teacher for half the steps,
                  then ..._stage2.gin                      the strong teacher for the other half

A run whose evaluation exists is not run again, so an interrupted study picks up where it stopped.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from orca_jax.errors import UserError

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
    """Trains one student at one seed (skipped when already evaluated) and returns its eval metrics.
    `steps` 0 keeps the run configs' own NUM_STEPS."""
    dirs = stage_dirs(work, student, seed)
    done = sorted(glob.glob(os.path.join(dirs[-1], "eval", "metrics_step_*.json")))
    if not done:
        common = [f"--gin.DATA_DIR={data_dir}", f"--gin.SEED={seed}"]

        def num_steps(n: int) -> list[str]:
            return [f"--gin.NUM_STEPS={n}"] if steps else []

        if student == "progressive":
            run(["orca_jax.cli.train", "--gin_file=configs/runs/mini_orca_progressive.gin",
                 f"--gin.MODEL_DIR={dirs[0]}", *num_steps(steps // 2), *common])  # fmt: skip
            run(["orca_jax.cli.train", "--gin_file=configs/runs/mini_orca_progressive_stage2.gin",
                 f"--gin.MODEL_DIR={dirs[1]}", f"--gin.STAGE1_DIR={dirs[0]}", *num_steps(steps - steps // 2),
                 *common])  # fmt: skip
        else:
            run(["orca_jax.cli.train", f"--gin_file=configs/runs/mini_orca_{student}.gin",
                 f"--gin.MODEL_DIR={dirs[0]}", *num_steps(steps), *common])  # fmt: skip
        run(["orca_jax.cli.eval", "--gin_file=configs/runs/eval_mini.gin", f"--gin.CHECKPOINT_DIR={dirs[-1]}",
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
