"""`orca-data sample`: Orca's FLAN-v2 mixture from Open-Orca/FLAN-style files (CoT all, NiV2 capped per task,
Flan 2021 and T0 stratified, Dialog never read), deterministic for a seed, and the FLAN-1M subset."""

import json
import os
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orca_jax.cli.data import main
from orca_jax.data.system_messages import BEHAVIOURS, COLLECTIONS, orca_message
from orca_jax.datagen import flan_sample
from orca_jax.datagen.collect import read_queries
from orca_jax.errors import DataError

# Task sizes per collection; NiV2's cap (4) and Flan/T0's budgets are scaled down from 300 / 2.5M / 2M.
COT = {"cot_gsm8k": 12, "cot_esnli": 10, "cot_qasc": 8}
NIV = {"task001": 2, "task002": 10, "task003": 10, "task004": 50, "task005": 3}
FLAN = {"anli_r1": 1, "glue_qqp": 5, "squad_v1": 100, "trivia_qa": 100}
T0 = {"adversarial_qa": 40, "wiki_qa": 40, "quartz": 2}


def rows(tasks, prefix, options_every=0):
    out = []
    for task, n in tasks.items():
        for i in range(n):
            multiple_choice = options_every and i % options_every == 0
            question = f"{prefix} {task} query {i}?" + ("\nOptions:\n- yes\n- no" if multiple_choice else "")
            out.append({"inputs": question, "targets": "t", "_task_name": task, "_template_type": "zs_opt",
                        "_task_source": prefix, "_template_idx": 0})  # fmt: skip
    random.Random(prefix).shuffle(out)  # the tasks interleave in the files, as in the real export
    return out


def write_parquet(path, table_rows, parts=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    k = -(-len(table_rows) // parts)
    for p in range(parts):
        pq.write_table(pa.Table.from_pylist(table_rows[p * k : (p + 1) * k]), path.format(p))


@pytest.fixture
def flan_dir(tmp_path):
    root = tmp_path / "FLAN"
    cot = rows(COT, "CoT")
    # Rows to skip: a few-shot row and an empty query, as a mixed export may hold.
    cot += [{"inputs": "Q: 1+1? A: 2. Q: 2+2?", "targets": "4", "_task_name": "cot_gsm8k", "_template_type": "fs_opt",
             "_task_source": "CoT", "_template_idx": 1},
            {"inputs": " ", "targets": "", "_task_name": "cot_gsm8k", "_template_type": "zs_opt",
             "_task_source": "CoT", "_template_idx": 1}]  # fmt: skip
    write_parquet(str(root / "cot_zsopt_data" / "part.{}.parquet"), cot)
    write_parquet(str(root / "niv2_zsopt_data" / "part.{}.parquet"), rows(NIV, "NIv2"), parts=3)
    os.makedirs(root / "flan_zsopt_data")
    with open(root / "flan_zsopt_data" / "part.0.jsonl", "w") as f:  # JSON lines, the metadata nested
        for r in rows(FLAN, "Flan2021", options_every=3):
            meta = {"_task_name": r["_task_name"], "_template_type": "zs_opt"}
            f.write(json.dumps({"inputs": r["inputs"], "targets": r["targets"], "metadata": meta}) + "\n")
    with open(root / "t0_zs_submix_data.json", "w") as f:  # one JSON array, plain field names
        json.dump([{"inputs": r["inputs"], "task_name": r["_task_name"]} for r in rows(T0, "T0")], f)
    os.makedirs(root / "dialog_zsopt_data")
    (root / "dialog_zsopt_data" / "part.0.parquet").write_bytes(b"not parquet: reading it would fail the test")
    return root


def run_sample(flan_dir, out, *extra):
    main(["sample", "--flan_dir", str(flan_dir), "--out", str(out), "--niv_per_task", "4", "--flan_num", "40",
          "--t0_num", "30", *extra])  # fmt: skip
    return [q for _, q in read_queries(str(out))]


def test_sample_takes_orcas_mixture(flan_dir, tmp_path):
    queries = run_sample(flan_dir, tmp_path / "q.jsonl")
    by = Counter(q["collection"] for q in queries)
    assert by == {"cot": 30, "niv": 2 + 4 + 4 + 4 + 3, "flan": 40, "t0": 30}  # CoT all, NiV2 at most 4 a task
    assert len({q["id"] for q in queries}) == len(queries)
    assert len({q["question"] for q in queries}) == len(queries)  # without replacement
    assert all(q["id"].startswith(q["collection"] + ".") and q["response"] == "" for q in queries)
    assert not any("Q: 1+1?" in q["question"] or not q["question"].strip() for q in queries)  # few-shot, empty: out
    per_task = Counter(q["question"].split()[1] for q in queries if q["collection"] == "flan")
    assert per_task["anli_r1"] == 1 and sum(per_task.values()) == 40 and max(per_task.values()) <= 100
    assert per_task["glue_qqp"] == 5  # 40 uniform picks over 4 tasks exhaust a task of 5 (for this seed)
    # The order is shuffled, not grouped by collection, so a run cut short is still a mix.
    first = Counter(q["collection"] for q in queries[:40])
    assert len(first) == 4


def test_system_messages_follow_the_collection(flan_dir, tmp_path):
    queries = run_sample(flan_dir, tmp_path / "q.jsonl", "--seed", "3")
    for q in queries:
        assert q["system_prompt"] == orca_message(q["id"], q["question"], q["collection"], seed=3)
        allowed = {BEHAVIOURS[b] for b in COLLECTIONS[q["collection"]]}
        assert q["system_prompt"] in allowed
        if q["collection"] == "flan" and "Options:" not in q["question"]:
            assert q["system_prompt"] not in (BEHAVIOURS[8], BEHAVIOURS[10])  # multiple-choice only
    used = Counter(q["system_prompt"] for q in queries if q["collection"] == "niv")
    assert len(used) > 3


def test_sample_is_deterministic_for_a_seed(flan_dir, tmp_path):
    a = (tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl")
    run_sample(flan_dir, a[0])
    run_sample(flan_dir, a[1])
    run_sample(flan_dir, a[2], "--seed", "1")
    assert a[0].read_bytes() == a[1].read_bytes()
    assert a[0].read_bytes() != a[2].read_bytes()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".sample-") or f.endswith(".partial")]


def test_flags_skip_cap_and_name_files(flan_dir, tmp_path):
    out = tmp_path / "q.jsonl"
    main(["sample", "--flan_dir", str(flan_dir), "--out", str(out), "--cot_num", "0", "--niv_num", "0",
          "--flan_num", "0", "--t0", str(flan_dir / "t0_zs_submix_data.json"), "--t0_per_task", "5"])  # fmt: skip
    queries = [q for _, q in read_queries(str(out))]
    assert Counter(q["collection"] for q in queries) == {"t0": 5 + 5 + 2}


def test_allocate_is_orcas_sequential_scheme():
    """The bulk allocation has the distribution of Orca's loop: pick a task uniformly, take a query
    if it has one left (else pick again)."""

    def sequential(sizes, num, rng):
        counts = [0] * len(sizes)
        while sum(counts) < num:
            t = rng.randrange(len(sizes))
            if counts[t] < sizes[t]:
                counts[t] += 1
        return counts

    sizes, num, trials = np.array([2, 5, 9, 50]), 30, 3000
    bulk = np.mean([flan_sample.allocate(sizes, num, None, np.random.default_rng(s)) for s in range(trials)], axis=0)
    loop = np.mean([sequential(sizes.tolist(), num, random.Random(s)) for s in range(trials)], axis=0)
    np.testing.assert_allclose(bulk, loop, atol=0.15)
    for s in range(50):
        counts = flan_sample.allocate(sizes, 15, 6, np.random.default_rng(s))
        assert counts.sum() == 15 and (counts <= np.minimum(sizes, 6)).all()
    np.testing.assert_array_equal(flan_sample.allocate(sizes, 1000, 6, np.random.default_rng(0)), [2, 5, 6, 6])


def test_bad_input_names_the_file_and_row(flan_dir, tmp_path):
    bad = tmp_path / "niv_bad"
    write_parquet(str(bad / "part.{}.parquet"), [{"inputs": "q?", "_template_type": "zs_opt"}])
    with pytest.raises(DataError, match=r"part\.0\.parquet:1: no task name"):
        flan_sample.sample({"niv": flan_sample.Plan(tuple(flan_sample.expand(str(bad))), None, 300)},
                           str(tmp_path / "q.jsonl"))  # fmt: skip
    broken = tmp_path / "flan.jsonl"
    broken.write_text('{"inputs": "a?", "_task_name": "t"}\n{"inputs": \n')
    with pytest.raises(DataError, match=r"flan\.jsonl:2: not a JSON object"):
        flan_sample.index_tasks("flan", (str(broken),))
    with pytest.raises(DataError, match="expected one niv2_zsopt_data"):
        flan_sample.find_files(str(tmp_path), "niv")
    with pytest.raises(SystemExit) as e:
        main(["sample", "--out", str(tmp_path / "x.jsonl")])
    assert e.value.code == 2


def test_subset_draws_flan_1m_from_flan_5m(flan_dir, tmp_path, capsys):
    queries = run_sample(flan_dir, tmp_path / "q.jsonl")
    # A stage-1 response file as the source: the subset keeps ids, messages and collections, not responses.
    answered = tmp_path / "answered.jsonl"
    answered.write_text("".join(json.dumps({**q, "response": "an answer"}) + "\n" for q in queries))
    main(["sample", "--subset_of", str(answered), "--num", "25", "--out", str(tmp_path / "s.jsonl")])
    main(["sample", "--subset_of", str(answered), "--num", "25", "--out", str(tmp_path / "s2.jsonl")])
    subset = [q for _, q in read_queries(str(tmp_path / "s.jsonl"))]
    assert (tmp_path / "s.jsonl").read_bytes() == (tmp_path / "s2.jsonl").read_bytes()
    source = {q["id"]: q for q in queries}
    assert len(subset) == 25 == len({q["id"] for q in subset})
    for q in subset:
        assert q == {**source[q["id"]], "response": ""}
    order = [q["id"] for q in queries]
    assert [q["id"] for q in subset] == sorted((q["id"] for q in subset), key=order.index)  # source order
    with pytest.raises(SystemExit):
        main(["sample", "--subset_of", str(answered), "--num", "10000", "--out", str(tmp_path / "s3.jsonl")])
    assert "fewer than --num" in capsys.readouterr().err


def test_validate_reports_queries_as_not_yet_training_data(flan_dir, tmp_path, capsys):
    out = tmp_path / "q.jsonl"
    queries = run_sample(flan_dir, out)
    with pytest.raises(SystemExit) as e:
        main(["validate", str(out)])
    assert e.value.code == 2
    assert f"rejected {{'empty_field': {len(queries)}}}" in capsys.readouterr().out
