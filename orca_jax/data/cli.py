"""orca-data: make and check explanation-tuning data.

orca-data generate-mini --out DIR [--num_train N] [--num_heldout N] [--digits D] [--seed S]
orca-data validate FILE_OR_GLOB [...]
"""

from __future__ import annotations

import argparse
import os
import sys

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
    from orca_jax.data import records

    total = 0
    for path in records.resolve_files(args.files):
        n = sum(1 for _ in records.read_jsonl(path))
        print(f"{path}: {n} records, all valid")
        total += n
    print(f"{total} records")


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

    val = commands.add_parser("validate", help="check OpenOrca-format JSONL files line by line")
    val.add_argument("files", nargs="+", help="paths or globs")
    val.set_defaults(run=validate)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.run(args)


if __name__ == "__main__":
    main()
