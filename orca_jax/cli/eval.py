"""orca-eval: evaluate the checkpoints orca-train writes, configured by gin; or rescore an inferences file.

    orca-eval --gin_file=configs/runs/eval_bbh_agieval.gin --gin.CHECKPOINT_DIR=gs://bucket/run \\
              --gin.BBH_DIR=BIG-Bench-Hard/bbh --gin.AGIEVAL_DIR=AGIEval/data/v1
    orca-eval --gin_file=configs/runs/eval_mini.gin --gin.CHECKPOINT_DIR=/tmp/mini --gin.evaluate.steps="'all'"
    orca-eval rescore --inferences CHECKPOINT_DIR/eval/inferences_step_800.jsonl [--out metrics.json]

`evaluate.steps`: 'latest' (default), a step number, or 'all' (every checkpoint as training writes
it, until training marks the run finished). Outputs go to CHECKPOINT_DIR/eval/: metrics_step_<N>.json,
inferences_step_<N>.jsonl, TensorBoard scalars, and ledger.json (the steps already evaluated).
`rescore` recomputes answers and metrics from an inferences file's task, target and generation
keys, with no model: to fix a parser without generating again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from orca_jax.cli import gin_flags
from orca_jax.errors import DataError, exit_on_user_error


def configurables() -> dict:
    from orca_jax.evaluation import evaluator
    from orca_jax.parallel.sharding import MeshConfig

    return {
        "evaluate": evaluator.evaluate,
        "Suites": evaluator.Suites,
        "Generation": evaluator.Generation,
        "Judged": evaluator.Judged,
        "MeshConfig": MeshConfig,
    }


def print_metrics(metrics: dict, header: str) -> None:
    """A table per suite (task, accuracy, parsed, examples), then the other metrics."""
    print(header)
    tasks: dict[str, dict[str, dict[str, float]]] = {}
    judged: dict[str, dict[str, float]] = {}
    rest = {}
    for name, value in metrics.items():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "judged":
            judged.setdefault(parts[1], {})[parts[2]] = value
        elif len(parts) == 3 and parts[2] in ("accuracy", "parsed", "examples", "rank_accuracy"):
            tasks.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = value
        else:
            rest[name] = value
    for suite, rows in tasks.items():
        width = max(len(t) for t in [*rows, "average", "task"])
        print(f"  {suite:<{width}}  accuracy  parsed  examples")
        for task, row in rows.items():
            accuracy = f"{100 * row['accuracy']:7.1f}%" if "accuracy" in row else f"{'-':>8}"
            parsed = f"{100 * row['parsed']:5.0f}%" if "parsed" in row else f"{'-':>6}"
            print(f"  {task:<{width}}  {accuracy}  {parsed}  {int(row.get('examples', 0)):>8}")
        if f"{suite}/average" in rest:
            print(f"  {'average':<{width}}  {100 * rest.pop(suite + '/average'):7.1f}%")
    if judged:
        width = max(len(n) for n in [*judged, "judged"])
        print(f"  {'judged':<{width}}  student  reference   ratio  position bias  unparsed  failed  prompts")
        for name, m in judged.items():
            scores = f"{m['student_score']:7.2f}  {m['reference_score']:9.2f}  {100 * m['ratio']:5.1f}%"
            counts = f"{int(m['unparsed']):8d}  {int(m['failed']):6d}  {int(m['prompts']):7d}"
            print(f"  {name:<{width}}  {scores}  {m['position_bias']:+13.2f}  {counts}")
    width = max((len(k) for k in rest), default=0)
    for name, value in rest.items():
        print(f"  {name:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {name:<{width}}  {value}")


def rescore_main(argv: list[str]) -> None:
    from orca_jax.evaluation.evaluator import rescore

    parser = argparse.ArgumentParser(prog="orca-eval rescore", description="recompute metrics from inferences")
    parser.add_argument("--inferences", required=True, help="an inferences_step_<N>.jsonl that orca-eval wrote")
    parser.add_argument("--out", default="", help="also write the metrics here as JSON (a new file)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.out and os.path.exists(args.out) and not args.overwrite:
        raise DataError(f"{args.out}: exists; choose another --out or pass --overwrite")
    rows = []
    try:
        with open(args.inferences, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{args.inferences}:{number}: not valid JSON ({e.msg})") from None
    except OSError as e:
        raise DataError(f"{args.inferences}: cannot read ({e.strerror})") from None
    if not rows:
        raise DataError(f"{args.inferences}: no inference rows")
    metrics, _ = rescore(rows, args.inferences)
    print_metrics(metrics, f"rescored {len(rows)} generations from {args.inferences}:")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)
        print(f"metrics: {args.out}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "rescore":
        return rescore_main(argv[1:])
    from orca_jax.data.pipeline import keep_tensorflow_off_accelerators

    registry = gin_flags.configure("orca-eval", __doc__, configurables(), argv)
    checkpoint_dir = gin_flags.macro_value("CHECKPOINT_DIR")
    keep_tensorflow_off_accelerators()
    results = gin_flags.call_configured(registry["evaluate"], "evaluate")
    for metrics in results:
        step = int(metrics["step"])
        print_metrics(metrics, f"evaluation of {os.path.abspath(checkpoint_dir)} at step {step}:")


if __name__ == "__main__":
    main()
