"""End-to-end input pipeline throughput: read, validate, template, tokenize, pack, batch.

    python benchmarks/data_pipeline.py            # 20,000 OpenOrca-like records, Mistral's tokenizer, rows of 2048

Writes synthetic OpenOrca-format JSONL (text of real SentencePiece words, lengths log-normal with a
median of about 300 tokens), then times `orca_jax.data.pipeline.host_batches` over it exactly as
orca-train builds it (best-fit packing, Orca template, strict validation inside the pipeline).
Prints one JSON line: tokens/s (non-padding tokens in the packed rows) and tokens/s per CPU core of
this machine. Needs the `test` extra (mistral-common ships the tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def synthetic_records(path: str, n: int, tokenizer_path: str, seed: int) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    words = [sp.id_to_piece(i)[1:] for i in range(sp.get_piece_size())
             if sp.id_to_piece(i).startswith("\u2581") and sp.id_to_piece(i)[1:].isalpha()]  # fmt: skip
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            q_len, r_len = (max(3, int(x)) for x in rng.lognormal([np.log(90), np.log(170)], 0.9))
            question = " ".join(rng.choice(words, q_len))
            response = " ".join(rng.choice(words, r_len))
            f.write(json.dumps({"id": f"flan.{i}", "system_prompt": "You are a helpful assistant.",
                                "question": question, "response": response}) + "\n")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--seq_len", type=int, default=2048)
    p.add_argument("--rows", type=int, default=8, help="rows per batch")
    p.add_argument("--packing", default="best_fit")
    args = p.parse_args()
    import mistral_common

    from orca_jax.data.config import DataConfig, FileSet
    from orca_jax.data.pipeline import host_batches

    tokenizer = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "records.jsonl")
    synthetic_records(path, args.records, tokenizer, seed=0)
    config = DataConfig(sources=(FileSet("bench", train=path),), vocabulary=tokenizer, sequence_length=args.seq_len,
                        packing=args.packing)  # fmt: skip
    start = time.perf_counter()
    batches = host_batches(config, "train", args.rows, shuffle=True, seed=0, num_epochs=1)
    tokens = rows = examples = 0
    for batch in batches:
        segments = batch["decoder_segment_ids"]
        tokens += int((segments > 0).sum())
        rows += int((segments.max(axis=1) > 0).sum())
        examples += int(segments.max(axis=1).sum())
    seconds = time.perf_counter() - start
    cores = os.cpu_count() or 1
    print(json.dumps({
        "benchmark": "data_pipeline", "records": args.records, "examples": examples, "rows": rows,
        "seq_len": args.seq_len, "packing": args.packing, "seconds": round(seconds, 2),
        "tokens_per_sec": round(tokens / seconds), "cpu_cores": cores,
        "tokens_per_sec_per_core": round(tokens / seconds / cores),
        "non_pad_fraction": round(tokens / (rows * args.seq_len), 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
