"""orca-data: make and check explanation-tuning data.

orca-data generate-mini --out DIR [--num_train N] [--num_heldout N] [--digits D] [--seed S]
orca-data validate FILE_OR_GLOB ... [--format openorca|sharegpt] [--rejects FILE]
orca-data stats --input GLOB --vocab byte|tokenizer.model|tokenizer.json --seq_len 2048
                [--packing best_fit|greedy|none] [--template orca] [--json] [--histogram FILE.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

from orca_jax.errors import DataError, exit_on_user_error


def generate_mini(args: argparse.Namespace) -> None:
    from orca_jax.data import mini_orca

    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
        raise DataError(f"{args.out}: folder is not empty; choose another --out or pass --overwrite")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise DataError(f"{args.out}: exists and is not a folder")
    try:
        paths = mini_orca.write_mini_orca(
            args.out, num_train=args.num_train, num_heldout=args.num_heldout, digits=args.digits, seed=args.seed
        )
    except ValueError as e:
        raise DataError(str(e)) from None
    sizes = f"{args.num_train} train, {args.num_heldout} held-out"
    print(f"mini-Orca ({sizes}, {args.digits}-digit additions, seed {args.seed}):")
    for name, path in paths.items():
        print(f"  {name:<12} {path}")


def validate(args: argparse.Namespace) -> None:
    """Counts per file and per reason; exit 0 only when every record is valid."""
    from orca_jax.data import records

    totals: Counter = Counter()
    rejects = open(args.rejects, "w", encoding="utf-8") if args.rejects else None
    first_bad = ""
    for path in records.resolve_files(args.files):
        counts: Counter = Counter()
        for where, item in records.scan_file(path, args.format):
            if isinstance(item, records.Rejection):
                counts[item.reason] += 1
                first_bad = first_bad or item.message(where)
                if rejects:
                    rejects.write(json.dumps({"where": where, "reason": item.reason, "field": item.field,
                                              "detail": item.detail}) + "\n")  # fmt: skip
            else:
                counts["valid"] += 1
        bad = {k: v for k, v in counts.items() if k != "valid"}
        print(f"{path}: {counts['valid']} valid" + (f", rejected {dict(bad)}" if bad else ""))
        totals += counts
    if rejects:
        rejects.close()
    bad_total = sum(v for k, v in totals.items() if k != "valid")
    print(f"{totals['valid']} valid, {bad_total} rejected" + (f" {dict(totals - Counter(valid=totals['valid']))}"
                                                            if bad_total else ""))  # fmt: skip
    if bad_total:
        where = f" (each listed in {args.rejects})" if args.rejects else " (--rejects FILE lists each)"
        raise DataError(f"{bad_total} invalid records{where}; the first: {first_bad}")


def stats(args: argparse.Namespace) -> None:
    from orca_jax.data.stats import compute_stats, write_histogram
    from orca_jax.data.tasks import DataConfig, FileSet

    config = DataConfig(
        sources=(FileSet("stats", train=args.input, format=args.format),), vocabulary=args.vocab,
        template=args.template, system_messages=args.system_messages, sequence_length=args.seq_len,
        packing=args.packing, overlong=args.overlong, policy="skip",
    )  # fmt: skip
    result = compute_stats(config)
    report = result.to_json()
    if args.histogram:
        write_histogram(result.lengths, args.seq_len, args.histogram)
        report["histogram"] = args.histogram
    if args.json:
        print(json.dumps(report))
        return
    lengths = report["token_length"]
    print(f"records            {report['records']:,} ({report['examples']:,} kept; rejected {report['rejected'] or 0})")
    print(f"tokens per example p50 {lengths.get('p50')}, p90 {lengths.get('p90')}, p99 {lengths.get('p99')}, "
          f"max {lengths['max']}")  # fmt: skip
    print(f"rows of {args.seq_len:<8} {report['rows']:,} ({args.packing})")
    print(f"examples per row   {report['examples_per_row']:.2f}")
    print(f"non-padding        {100 * report['non_pad_fraction']:.2f}%")
    if args.histogram:
        print(f"histogram          {args.histogram}")


def _positive(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orca-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate-mini", help="write the synthetic mini-Orca data set")
    gen.add_argument("--out", required=True, help="folder to write train.jsonl, heldout.jsonl, heldout_bbh.json into")
    gen.add_argument("--num_train", type=_positive, default=20000)
    gen.add_argument("--num_heldout", type=_positive, default=200)
    gen.add_argument("--digits", type=_positive, default=3, help="digits of each operand")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--overwrite", action="store_true", help="replace the files in a non-empty --out")
    gen.set_defaults(run=generate_mini)

    val = commands.add_parser("validate", help="check record files line by line; exit 0 only when all are valid")
    val.add_argument("files", nargs="+", help="paths or globs (.jsonl, .parquet, .tfrecord)")
    val.add_argument("--format", choices=("openorca", "sharegpt"), default="openorca")
    val.add_argument("--rejects", default="", help="write each invalid record's location and reason here (JSONL)")
    val.set_defaults(run=validate)

    st = commands.add_parser("stats", help="token lengths, rows and padding at a row length")
    st.add_argument("--input", required=True, help="paths or globs")
    st.add_argument("--format", choices=("openorca", "sharegpt"), default="openorca")
    st.add_argument("--vocab", required=True, help="byte, a SentencePiece .model or a tokenizer.json")
    st.add_argument("--template", default="orca")
    st.add_argument("--system_messages", default="keep", choices=("keep", "orca", "erase"))
    st.add_argument("--seq_len", type=_positive, default=2048)
    st.add_argument("--packing", choices=("best_fit", "greedy", "none"), default="best_fit")
    st.add_argument("--overlong", choices=("drop", "trim_prompt"), default="drop")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.add_argument("--histogram", default="", help="write a PNG histogram of token lengths here")
    st.set_defaults(run=stats)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.run(args)


if __name__ == "__main__":
    main()
