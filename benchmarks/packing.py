"""Packing efficiency at a row length, greedy against best-fit, on SFT-like example lengths.

    python benchmarks/packing.py                  # 100,000 examples, rows of 2048, windows of 1000

Lengths are drawn from a log-normal distribution shaped like OpenOrca's tokenized examples (median
about 300 tokens, a tail past 2048: `--median 300 --sigma 1.0`). Examples longer than a row are
dropped and counted. Prints one JSON line per packer: rows, examples per row, the non-padding
fraction, and the packer's speed; also the non-padding fraction of windows packed on their own,
without carrying their open rows into the next (the packer before it carried them).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from orca_jax.data.packing import assign_rows, count_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=100_000)
    p.add_argument("--seq_len", type=int, default=2048)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--median", type=float, default=300.0)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    lengths = np.maximum(1, rng.lognormal(np.log(args.median), args.sigma, args.examples).astype(int))
    kept = lengths[lengths <= args.seq_len].tolist()
    for mode in ("greedy", "best_fit"):
        start = time.perf_counter()
        rows = count_rows(kept, args.seq_len, mode, args.window)
        seconds = time.perf_counter() - start
        # Each window on its own, every row emitted with it (the packer before windows carried rows).
        windows = [kept[i : i + args.window] for i in range(0, len(kept), args.window)]
        rows_no_carry = sum(
            len(emit) + len(carry) for emit, carry in (assign_rows(w, args.seq_len, mode) for w in windows)
        )
        print(json.dumps({
            "benchmark": "packing", "packing": mode, "seq_len": args.seq_len, "window": args.window,
            "examples": len(kept), "dropped_over_length": int(len(lengths) - len(kept)),
            "median_length": int(np.median(lengths)), "p99_length": int(np.percentile(lengths, 99)),
            "rows": rows, "examples_per_row": round(len(kept) / rows, 3),
            "non_pad_fraction": round(sum(kept) / (rows * args.seq_len), 4),
            "examples_per_sec": round(len(kept) / seconds),
            "non_pad_fraction_without_carry": round(sum(kept) / (rows_no_carry * args.seq_len), 4),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
