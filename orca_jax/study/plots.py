"""The mini-Orca study's picture (RESULTS/mini_orca.png), drawn with PIL alone (no plotting library).

Top: accuracy per family and student for each suite: a bar for the mean over seeds, a dot per seed,
and a grey tick at the commonest-answer baseline. Bottom: the mean training loss per student against
step (log scale); a progressive student's stage 2 continues its stage 1's step count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"answer_only": (200, 60, 60), "explain": (40, 110, 200), "progressive": (40, 160, 80)}
WIDTH, PANEL, CURVES, MARGIN = 1100, 300, 300, 60


def write_png(summary: dict, baselines: dict, curves: dict[str, list[list[tuple[int, float]]]], path: str,
              suites: Sequence[tuple[str, str]], labels: dict[str, str]) -> None:  # fmt: skip
    students = [s for s in labels if s in summary]
    shown = [(suite, title) for suite, title in suites if _families(summary, suite)]
    height = MARGIN + len(shown) * (PANEL + MARGIN) + CURVES + MARGIN
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    for i, student in enumerate(students):
        x = MARGIN + 160 * i
        draw.rectangle([x, 15, x + 12, 27], fill=COLORS.get(student, "black"))
        draw.text((x + 18, 15), labels[student], fill="black")
    draw.text((MARGIN + 160 * len(students), 15), "bar: mean | dots: seeds | grey tick: commonest answer", fill="black")
    top = MARGIN
    for suite, title in shown:
        _accuracy_panel(draw, summary, baselines, suite, title, students, top)
        top += PANEL + MARGIN
    _curves_panel(draw, curves, students, labels, top)
    image.save(path)


def _families(summary: dict, suite: str) -> list[str]:
    return sorted({k.split("/")[1] for by_key in summary.values() for k in by_key
                   if k.startswith(suite + "/") and k.endswith("/accuracy")})  # fmt: skip


def _accuracy_panel(draw, summary, baselines, suite, title, students, top) -> None:
    families = [*_families(summary, suite), "average"]
    left, right, bottom = MARGIN, WIDTH - MARGIN // 2, top + PANEL
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, top - 16), f"{title}: exact-match accuracy (%)", fill="black")
    for pct in (0, 25, 50, 75, 100):
        y = bottom - pct / 100 * PANEL
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((left - 28, y - 6), str(pct), fill="black")
    group = (right - left) / len(families)
    bar = group * 0.8 / max(len(students), 1)
    for g, family in enumerate(families):
        x0 = left + g * group + group * 0.1
        key = f"{suite}/{family}/accuracy" if family != "average" else f"{suite}/average"
        for i, student in enumerate(students):
            value = summary[student].get(key)
            if not value:
                continue
            x = x0 + i * bar
            color = COLORS.get(student, (0, 0, 0))
            draw.rectangle([x + 2, bottom - value["mean"] * PANEL, x + bar - 2, bottom], fill=_light(color))
            for seed_value in value.get("seeds", []):
                cx, cy = x + bar / 2, bottom - seed_value * PANEL
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)
        base = baselines.get(f"{suite}/{family}")
        if base is None and family == "average":
            values = [baselines.get(f"{suite}/{f}", {}).get("commonest") for f in families[:-1]]
            base = {"commonest": float(np.mean([v for v in values if v is not None]))} if any(values) else None
        if base:
            y = bottom - base["commonest"] * PANEL
            draw.line([x0, y, x0 + bar * len(students), y], fill=(120, 120, 120), width=2)
        draw.text((x0, bottom + 6), family[:24], fill="black")


def _curves_panel(draw, curves, students, labels, top) -> None:
    left, right, bottom = MARGIN, WIDTH - MARGIN // 2, top + CURVES
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, top - 16), "training loss on response tokens (mean over seeds, log scale) against step",
              fill="black")  # fmt: skip
    means = {}
    for student in students:
        runs = [run for run in curves.get(student, []) if run]
        if runs:
            steps = sorted(set.intersection(*(set(s for s, _ in run) for run in runs)))
            means[student] = [(s, float(np.mean([dict(run)[s] for run in runs]))) for s in steps]
    points = [p for series in means.values() for p in series]
    if not points:
        return
    max_step = max(s for s, _ in points)
    logs = np.log10([max(v, 1e-4) for _, v in points])
    low, high = float(logs.min()), float(logs.max()) + 1e-9

    def xy(step: int, loss: float) -> tuple[float, float]:
        y = (np.log10(max(loss, 1e-4)) - low) / (high - low)
        return left + step / max_step * (right - left), bottom - y * (bottom - top)

    for student, series in means.items():
        if len(series) > 1:
            draw.line([xy(s, v) for s, v in series], fill=COLORS.get(student, "black"), width=2)
    draw.text((left, bottom + 6), f"step 0 .. {max_step}", fill="black")
    draw.text((left + 4, top + 4), f"{10**high:.3g}", fill="black")
    draw.text((left + 4, bottom - 16), f"{10**low:.3g}", fill="black")


def _light(color: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(c + (255 - c) * 0.55) for c in color)
