"""What a data set becomes at a row length: token lengths, rows, examples per row, padding.

Every record goes through the training pipeline's own steps (validation, system message, chat
template, tokenizer, over-length policy, the packer's row assignment in windows), in Python, so the
figures are the ones a run would see.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable

import numpy as np

from orca_jax.data import packing, readers
from orca_jax.data.config import DataConfig, FileSet
from orca_jax.data.records import Rejection
from orca_jax.data.templates import get_template


@dataclasses.dataclass
class DataStats:
    records: int
    rejected: dict[str, int]
    lengths: np.ndarray  # tokens per kept example (prompt + response + EOS)
    rows: int
    non_pad_fraction: float

    @property
    def examples_per_row(self) -> float:
        return len(self.lengths) / max(self.rows, 1)

    def to_json(self) -> dict:
        pct = {f"p{p}": int(np.percentile(self.lengths, p)) for p in (50, 90, 99)} if len(self.lengths) else {}
        return {
            "records": self.records,
            "examples": int(len(self.lengths)),
            "rejected": self.rejected,
            "token_length": {**pct, "max": int(self.lengths.max()) if len(self.lengths) else 0},
            "rows": self.rows,
            "examples_per_row": round(self.examples_per_row, 3),
            "non_pad_fraction": round(self.non_pad_fraction, 4),
        }


def example_lengths(config: DataConfig, split: str = "train") -> tuple[int, Counter, list[int]]:
    """(records read, rejections per reason, token length of every kept example)."""
    vocab = config.make_vocabulary()
    template = get_template(config.template)
    messages = config.read_messages()
    limit = config.sequence_length
    n, rejected, lengths = 0, Counter(), []
    for fs in config.sources:
        for path in readers.resolve_files(fs.files(split)[0]):
            for _, item in readers.scan_file(path, fs.format):
                n += 1
                if isinstance(item, Rejection):
                    rejected[item.reason] += 1
                    continue
                system = config.system_message(item, messages)
                prompt = len(vocab.encode(template.prompt(system, item.question)))
                response = len(vocab.encode(template.response(item.response))) + 1  # + EOS
                response += len(vocab.encode(template.trailer)) if template.trailer else 0
                if config.overlong == "trim_prompt":
                    prompt = min(prompt, max(limit - response, 0))
                if prompt + response > limit:
                    rejected["over_length"] += 1
                else:
                    lengths.append(prompt + response)
    return n, rejected, lengths


def compute_stats(config: DataConfig, split: str = "train") -> DataStats:
    n, rejected, lengths = example_lengths(config, split)
    rows = packing.count_rows(lengths, config.sequence_length, config.packing, config.pack_window)
    tokens = sum(lengths)
    return DataStats(
        n, dict(rejected), np.array(lengths, np.int64), rows, tokens / max(rows * config.sequence_length, 1)
    )


def write_histogram(lengths: np.ndarray, limit: int, path: str, bins: int = 40) -> None:
    """A PNG bar chart of token lengths, with the row length marked."""
    from PIL import Image, ImageDraw

    width, height, margin = 800, 400, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top = max(int(lengths.max()) if len(lengths) else limit, limit)
    counts, edges = np.histogram(lengths, bins=bins, range=(0, top))
    scale = (height - 2 * margin) / max(counts.max(), 1)
    bar = (width - 2 * margin) / bins
    for i, c in enumerate(counts):
        x0 = margin + i * bar
        draw.rectangle([x0, height - margin - c * scale, x0 + bar - 1, height - margin], fill=(70, 110, 180))
    x_limit = margin + limit / top * (width - 2 * margin)
    draw.line([x_limit, margin, x_limit, height - margin], fill=(200, 40, 40), width=2)
    draw.line([margin, height - margin, width - margin, height - margin], fill="black")
    draw.text((margin, height - margin + 8), "0", fill="black")
    draw.text((width - margin - 40, height - margin + 8), f"{top} tokens", fill="black")
    label_x = x_limit + 4 if x_limit < width - 160 else x_limit - 110  # keep the label inside the image
    draw.text((label_x, margin), f"row length {limit}", fill=(200, 40, 40))
    draw.text((margin, 15), f"tokens per example: {len(lengths)} examples, max bar {counts.max()}", fill="black")
    image.save(path)


def report(files: str, *, vocab: str, seq_len: int, fmt: str = "openorca", template: str = "orca",
           system_messages: str = "keep", packing: str = "best_fit", overlong: str = "drop", as_json: bool = False,
           histogram: str = "", log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """`orca-data stats`: the figures of `files` at a row length, logged as a table (or one JSON
    object); bad records are counted, not fatal. Returns the JSON report."""
    config = DataConfig(
        sources=(FileSet("stats", train=files, format=fmt),), vocabulary=vocab, template=template,
        system_messages=system_messages, sequence_length=seq_len, packing=packing, overlong=overlong, policy="skip",
    )  # fmt: skip
    result = compute_stats(config)
    out = result.to_json()
    if histogram:
        write_histogram(result.lengths, seq_len, histogram)
        out["histogram"] = histogram
    if as_json:
        log(json.dumps(out))
        return out
    lengths = out["token_length"]
    log(f"records            {out['records']:,} ({out['examples']:,} kept; rejected {out['rejected'] or 0})")
    log(f"tokens per example p50 {lengths.get('p50')}, p90 {lengths.get('p90')}, p99 {lengths.get('p99')}, "
        f"max {lengths['max']}")  # fmt: skip
    log(f"rows of {seq_len:<8} {out['rows']:,} ({packing})")
    log(f"examples per row   {out['examples_per_row']:.2f}")
    log(f"non-padding        {100 * out['non_pad_fraction']:.2f}%")
    if histogram:
        log(f"histogram          {histogram}")
    return out
