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
import importlib
import sys

from orca_jax.errors import exit_on_user_error

FORMATS = ("openorca", "sharegpt")


def _number(kind: type, strict: bool):
    """An argparse type: a number above 0 (`strict`) or at least 0."""

    def parse(value: str):
        x = kind(value)
        if not (x > 0 if strict else x >= 0):
            what = f"a positive {'integer' if kind is int else 'number'}" if strict else "0 or more"
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return x

    return parse


_positive, _positive_float, _nonnegative, _nonnegative_float = (_number(int, True), _number(float, True),
                                                               _number(int, False), _number(float, False))  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orca-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
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
    gen.set_defaults(run="orca_jax.datagen.mini_orca.writer:generate_mini")

    val = commands.add_parser("validate", help="check record files line by line; exit 0 only when all are valid")
    val.add_argument("files", nargs="+", help="paths or globs (.jsonl, .parquet, .tfrecord)")
    val.add_argument("--format", dest="fmt", choices=FORMATS, default="openorca")
    val.add_argument("--rejects", default="", help="write each invalid record's location and reason here (JSONL)")
    val.set_defaults(run="orca_jax.data.validation:validate")

    st = commands.add_parser("stats", help="token lengths, rows and padding at a row length")
    st.add_argument("--input", dest="files", required=True, help="paths or globs")
    st.add_argument("--format", dest="fmt", choices=FORMATS, default="openorca")
    st.add_argument("--vocab", required=True, help="byte, a SentencePiece .model or a tokenizer.json")
    st.add_argument("--template", default="orca")
    st.add_argument("--system_messages", default="keep", choices=("keep", "orca", "erase"))
    st.add_argument("--seq_len", type=_positive, default=2048)
    st.add_argument("--packing", choices=("best_fit", "greedy", "none"), default="best_fit")
    st.add_argument("--overlong", choices=("drop", "trim_prompt"), default="drop")
    st.add_argument("--json", dest="as_json", action="store_true", help="print one JSON object")
    st.add_argument("--histogram", default="", help="write a PNG histogram of token lengths here")
    st.set_defaults(run="orca_jax.data.stats:report")

    sa = commands.add_parser("sample", help="sample Orca's query mixture from FLAN-v2 (queries, no responses yet)")
    sa.add_argument("--out", required=True, help="the query file to write (JSONL)")
    sa.add_argument("--flan_dir", default="", help="folder holding cot_zsopt_data/, niv2_zsopt_data/, ...")
    for c, name in (("cot", "CoT"), ("niv", "NiV2"), ("flan", "Flan 2021"), ("t0", "T0")):
        sa.add_argument(f"--{c}", default="", help=f"{name} files (paths, folder or glob) instead of --flan_dir's")
        sa.add_argument(f"--{c}_num", type=_nonnegative, default=None, help=f"{name} queries to draw (0 skips {name})")
        sa.add_argument(f"--{c}_per_task", type=_nonnegative, default=None, help="most queries per task (0: no cap)")
    sa.add_argument("--subset_of", default="", help="instead: draw --num records of this query or response file")
    sa.add_argument("--num", type=_positive, default=0, help="records to draw with --subset_of")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sa.set_defaults(run="orca_jax.datagen.flan_sample:sample_queries")

    co = commands.add_parser("collect", help="ask a teacher (OpenAI-compatible endpoint) to answer a query file")
    for flag, kind, default, text in (
        ("base_url", str, None, "e.g. https://api.openai.com/v1 or http://localhost:8000/v1"),
        ("model", str, None, "the teacher's model name at that endpoint"),
        ("out", str, None, "answers, appended (JSONL, OpenOrca columns)"),
        ("rejects", str, "", "refused, empty, truncated and failed queries (default OUT.rejects)"),
        ("api_key_env", str, "OPENAI_API_KEY", "environment variable holding the API key"),
        ("concurrency", _positive, 16, "requests in flight"),
        ("rpm", _nonnegative_float, 0.0, "requests per minute (0: no limit)"),
        ("tpm", _nonnegative_float, 0.0, "tokens per minute, in + out (0: no limit)"),
        ("timeout_s", _positive_float, 300.0, "deadline of one request"),
        ("max_retries", _nonnegative, 8, None),
        ("retry_base_s", _positive_float, 1.0, "first backoff; doubles per retry"),
        ("retry_max_s", _positive_float, 60.0, "longest single wait"),
        ("max_consecutive_failures", _positive, 50, "stop after this many in a row"),
        ("temperature", float, 0.7, None),
        ("top_p", float, 0.95, None),
        ("max_tokens", _positive, None, "the answer's token limit (default: server's)"),
        ("price_input_per_1m", _nonnegative_float, 0.0, "USD per 1M prompt tokens"),
        ("price_output_per_1m", _nonnegative_float, 0.0, "USD per 1M answer tokens"),
        ("log_every_s", _positive_float, 30.0, "progress line period when not a tty"),
    ):
        required = default is None and flag in ("base_url", "model", "out")
        co.add_argument(f"--{flag}", type=kind, default=default, required=required, help=text)
    co.add_argument("--in", dest="queries", required=True, help="queries from `orca-data sample` (JSONL or parquet)")
    co.add_argument("--no_api_key", action="store_true", help="send no key, even to a remote endpoint")
    co.add_argument("--retry_failed", action="store_true", help="ask again the queries rejected as `failed`")
    co.add_argument("--keep_refusals", action="store_true", help="keep answers that look like refusals")
    co.set_defaults(run="orca_jax.datagen.collect:collect_from")
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    flags = vars(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
    module, function = flags.pop("run").split(":")
    del flags["command"]
    getattr(importlib.import_module(module), function)(**flags)  # the library function the subcommand names


if __name__ == "__main__":
    main()
