"""The mini-Orca study's numbers: baselines per family, mean and spread over seeds, the markdown
report, and an evaluated run beside the study (`--compare`)."""

from __future__ import annotations

import collections
import glob
import json
import os

import numpy as np

from orca_jax.errors import UserError
from orca_jax.evaluation import answers
from orca_jax.study.runs import LABELS, STUDENTS, SUITES


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
