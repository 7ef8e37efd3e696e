"""orca-data: make and check explanation-tuning data.

orca-data generate-mini --out DIR [--num_train N] [--num_heldout N] [--num_hard N] [--families A,B,...]
                        [--intermediate_error_rate 0.2] [--seed S] [--overwrite]
orca-data validate FILE_OR_GLOB ... [--format openorca|sharegpt] [--rejects FILE]
orca-data stats --input GLOB --vocab byte|tokenizer.model|tokenizer.json --seq_len 2048
                [--packing best_fit|greedy|none] [--template orca] [--json] [--histogram FILE.png]
orca-data sample --flan_dir DIR --out QUERIES.jsonl [--cot_num N] [--niv_num N] [--niv_per_task 300]
                 [--flan_num 2500000] [--t0_num 2000000] [--cot|--niv|--flan|--t0 FILES] [--seed S]
orca-data sample --subset_of QUERIES_OR_RESPONSES.jsonl --num 1000000 --out QUERIES.jsonl [--seed S]
orca-data collect --base_url URL --model NAME --in QUERIES.jsonl --out RESPONSES.jsonl [--rejects FILE]
                  [--api_key_env OPENAI_API_KEY] [--concurrency 16] [--rpm N] [--tpm N] [--timeout_s 300]
                  [--temperature 0.7] [--top_p 0.95] [--max_tokens N] [--price_input_per_1m USD] ...
"""

from __future__ import annotations

import argparse
import dataclasses
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
    families = [f.strip() for f in args.families.split(",") if f.strip()] or list(mini_orca.DEFAULT_FAMILIES)
    try:
        paths = mini_orca.write_mini_orca(
            args.out, num_train=args.num_train, num_heldout=args.num_heldout, num_hard=args.num_hard,
            families=families, intermediate_error_rate=args.intermediate_error_rate, seed=args.seed,
        )  # fmt: skip
    except ValueError as e:
        raise DataError(str(e)) from None
    hard = args.num_heldout if args.num_hard is None else args.num_hard
    print(f"mini-Orca, {len(families)} families x ({args.num_train} train, {args.num_heldout} held-out, {hard} hard), "
          f"intermediate teacher wrong on {args.intermediate_error_rate:.0%}, seed {args.seed}:")  # fmt: skip
    for name in ("train_strong", "train_intermediate", "train_answer_only", "heldout", "tokenizer", "manifest"):
        print(f"  {name:<18} {paths[name]}")
    print(f"  {'bbh, bbh_hard':<18} {os.path.join(args.out, 'bbh')}/<family>.json, "
          f"{os.path.join(args.out, 'bbh_hard')}/<family>.json")  # fmt: skip


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


def sample(args: argparse.Namespace) -> None:
    """Orca's FLAN-v2 mixture (flan_sample.sample), or a uniform subset of a query file (FLAN-1M of FLAN-5M)."""
    from orca_jax.data import flan_sample

    if os.path.exists(args.out) and not args.overwrite:
        raise DataError(f"{args.out}: exists; choose another --out or pass --overwrite")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise DataError(f"{args.out}: its folder does not exist")
    if args.num and not args.subset_of:
        raise DataError("--num goes with --subset_of; size the mixture with --cot_num, --niv_num, --flan_num, --t0_num")
    if args.subset_of:
        if not args.num:
            raise DataError("--subset_of needs --num (how many records to keep)")
        flan_sample.subset(args.subset_of, args.num, args.out, args.seed)
        print(f"{args.out}: {args.num:,} queries drawn from {args.subset_of} (seed {args.seed})")
        return
    plans = {}
    for c in flan_sample.PREFIXES:
        num = getattr(args, f"{c}_num")
        num = flan_sample.DEFAULT_NUM[c] if num is None else num
        if num == 0:
            continue  # the user skips this collection
        per_task = getattr(args, f"{c}_per_task")
        per_task = flan_sample.DEFAULT_PER_TASK[c] if per_task is None else (per_task or None)
        pattern = getattr(args, c)
        if not pattern and not args.flan_dir:
            raise DataError(f"no files for {c}: pass --flan_dir DIR or --{c} FILES (or --{c}_num 0 to skip it)")
        files = flan_sample.expand(pattern) if pattern else flan_sample.find_files(args.flan_dir, c)
        plans[c] = flan_sample.Plan(tuple(files), num, per_task)
    if not plans:
        raise DataError("every collection is skipped (--*_num 0): nothing to sample")
    counts = flan_sample.sample(plans, args.out, args.seed)
    print(f"{args.out}: {sum(counts.values()):,} queries (dialog skipped), seed {args.seed}")


def collect(args: argparse.Namespace) -> None:
    """Asks the teacher (collect.collect); the API key only ever comes from the environment."""
    from orca_jax.data import collect as collector

    settings = collector.Settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(collector.Settings)})
    endpoint = collector.Endpoint(args.base_url, None, args.timeout_s)  # checks the URL before anything else
    api_key = None if args.no_api_key else os.environ.get(args.api_key_env) or None
    if api_key is None and not args.no_api_key:
        if not collector.is_local(endpoint.parts.hostname or ""):
            raise DataError(f"${args.api_key_env} is not set: export your API key in it (or name another variable "
                            f"with --api_key_env; --no_api_key for an endpoint without authentication)")  # fmt: skip
        print(f"${args.api_key_env} is not set: sending no API key to {endpoint.url} (a local server)", file=sys.stderr)
    summary = collector.collect(args.queries, args.out, args.rejects or args.out + ".rejects", settings, api_key,
                                log=lambda line: print(line, file=sys.stderr))  # fmt: skip
    print(json.dumps(summary))


def _nonnegative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return n


def _nonnegative_float(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return x


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return x


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
    gen.add_argument("--out", required=True, help="folder to write train_{strong,intermediate,answer_only}.jsonl, "
                     "heldout.jsonl, bbh/, bbh_hard/, tokenizer.model and manifest.json into")  # fmt: skip
    gen.add_argument("--num_train", type=_positive, default=10000, help="training questions per family")
    gen.add_argument("--num_heldout", type=_positive, default=100, help="held-out questions per family (bbh/)")
    gen.add_argument("--num_hard", type=_positive, default=None,
                     help="harder held-out questions per family (bbh_hard/); default: --num_heldout")  # fmt: skip
    gen.add_argument("--families", default="", help="comma-separated task families (default: the study's "
                     "three, addition, boolean_expressions, web_of_lies; also tracking_shuffled_objects)")  # fmt: skip
    gen.add_argument("--intermediate_error_rate", type=float, default=0.2,
                     help="share of each family's questions the intermediate teacher gets wrong")  # fmt: skip
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

    sa = commands.add_parser("sample", help="sample Orca's query mixture from FLAN-v2 (queries, no responses yet)")
    sa.add_argument("--out", required=True, help="the query file to write (JSONL)")
    sa.add_argument("--flan_dir", default="", help="folder holding cot_zsopt_data/, niv2_zsopt_data/, ...")
    for c, name in (("cot", "CoT"), ("niv", "NiV2"), ("flan", "Flan 2021"), ("t0", "T0")):
        sa.add_argument(f"--{c}", default="", help=f"{name} files (paths, folder or glob) instead of --flan_dir's")
        sa.add_argument(f"--{c}_num", type=_nonnegative, default=None,
                        help=f"{name} queries to draw (0 skips {name})")  # fmt: skip
        sa.add_argument(f"--{c}_per_task", type=_nonnegative, default=None, help="most queries per task (0: no cap)")
    sa.add_argument("--subset_of", default="", help="instead: draw --num records of this query or response file")
    sa.add_argument("--num", type=_positive, default=0, help="records to draw with --subset_of")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sa.set_defaults(run=sample)

    co = commands.add_parser("collect", help="ask a teacher (OpenAI-compatible endpoint) to answer a query file")
    co.add_argument("--base_url", required=True, help="e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    co.add_argument("--model", required=True, help="the teacher's model name at that endpoint")
    co.add_argument("--in", dest="queries", required=True, help="queries from `orca-data sample` (JSONL or parquet)")
    co.add_argument("--out", required=True, help="answers, appended (JSONL, OpenOrca columns)")
    co.add_argument("--rejects", default="", help="refused, empty, truncated and failed queries (default OUT.rejects)")
    co.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    co.add_argument("--no_api_key", action="store_true", help="send no key, even to a remote endpoint")
    co.add_argument("--concurrency", type=_positive, default=16, help="requests in flight")
    co.add_argument("--rpm", type=_nonnegative_float, default=0.0, help="requests per minute (0: no limit)")
    co.add_argument("--tpm", type=_nonnegative_float, default=0.0, help="tokens per minute, in + out (0: no limit)")
    co.add_argument("--timeout_s", type=_positive_float, default=300.0, help="deadline of one request")
    co.add_argument("--max_retries", type=_nonnegative, default=8)
    co.add_argument("--retry_base_s", type=_positive_float, default=1.0, help="first backoff; doubles per retry")
    co.add_argument("--retry_max_s", type=_positive_float, default=60.0, help="longest single wait")
    co.add_argument("--max_consecutive_failures", type=_positive, default=50, help="stop after this many in a row")
    co.add_argument("--retry_failed", action="store_true", help="ask again the queries rejected as `failed`")
    co.add_argument("--temperature", type=float, default=0.7)
    co.add_argument("--top_p", type=float, default=0.95)
    co.add_argument("--max_tokens", type=_positive, default=None, help="the answer's token limit (default: server's)")
    co.add_argument("--keep_refusals", action="store_true", help="keep answers that look like refusals")
    co.add_argument("--price_input_per_1m", type=_nonnegative_float, default=0.0, help="USD per 1M prompt tokens")
    co.add_argument("--price_output_per_1m", type=_nonnegative_float, default=0.0, help="USD per 1M answer tokens")
    co.add_argument("--log_every_s", type=_positive_float, default=30.0, help="progress line period when not a tty")
    co.set_defaults(run=collect)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.run(args)


if __name__ == "__main__":
    main()
