"""Mini-Orca's task families, three teachers, files and run configs.

Every family's answers are checked against an independent solver that reads only the question text,
so a wrong explanation and a wrong target cannot agree by construction.
"""

import datetime
import itertools
import json
import os
import random
import re

import gin
import pytest

from orca_jax import gin_cli
from orca_jax.data import mini_orca, records, system_messages
from orca_jax.data.cli import main as data_main
from orca_jax.data.mini_orca import FAMILIES, SHORT_BEHAVIOURS, closing, writer
from orca_jax.data.templates import get_template

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_answer(response: str) -> str:
    """What follows the last "So the answer is", without the closing period."""
    assert response.endswith(".") and "So the answer is " in response, response
    return response.rsplit("So the answer is ", 1)[1][:-1]


def option_letter(question: str, text: str) -> str:
    options = re.findall(r"^\(([A-E])\) (.+)$", question, re.M)
    return next(f"({letter})" for letter, option in options if option == text)


def solve(family: str, question: str) -> str:
    """The answer, worked out from the question text alone."""
    if family == "multistep_arithmetic":
        assert re.fullmatch(r"[-+() 0-9]+ =", question)
        return str(eval(question[:-2]))
    if family == "boolean_expressions":
        assert re.fullmatch(r"(True|False|not|and|or|[() ])+ is", question)
        return str(eval(question[:-3]))
    if family == "tracking_shuffled_objects":
        holdings = dict(re.findall(r"(\w+) has (\w+)[,.]", question.split(" Swaps:")[0] + "."))
        for a, b in re.findall(r"(\w+)-(\w+)", question.split("Swaps: ")[1].split(". At the end")[0]):
            holdings[a], holdings[b] = holdings[b], holdings[a]
        who = re.search(r"At the end, (\w+) has", question).group(1)
        return option_letter(question, holdings[who])
    if family == "logical_deduction":
        names = re.match(r"(.+) stand in a row", question).group(1).replace(" and ", ", ").split(", ")
        clues = [(a, b) for a, b in re.findall(r"(\w+) is left of (\w+)", question)]
        clues += [(b, a) for a, b in re.findall(r"(\w+) is right of (\w+)", question)]
        rows = [r for r in itertools.permutations(names) if all(r.index(a) < r.index(b) for a, b in clues)]
        assert len(rows) == 1, "the clues must fix the order"
        where = re.search(r"Who is (.+)\?", question).group(1)
        n = len(names)
        k = {"the leftmost": 0, "the rightmost": n - 1, "in the middle": n // 2, "second from the left": 1,
             "second from the right": n - 2}[where]  # fmt: skip
        return option_letter(question, rows[0][k])
    if family == "date_arithmetic":
        pattern = r"Today is (\d\d)/(\d\d)/(\d{4})\. What is the date (\d+) days? (from today|ago) in MM/DD/YYYY\?"
        m = re.fullmatch(pattern, question)
        today = datetime.date(int(m.group(3)), int(m.group(1)), int(m.group(2)))
        days = int(m.group(4)) * (1 if m.group(5) == "from today" else -1)
        return (today + datetime.timedelta(days=days)).strftime("%m/%d/%Y")
    if family == "word_sorting":
        return " ".join(sorted(question.split("List: ")[1].split()))
    if family == "addition":
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", question).groups())
        return str(a + b)
    raise AssertionError(family)


def problems(family: str, hard: bool, n: int = 150, seed: int = 0):
    rng = random.Random(f"test/{family}/{seed}")
    return [FAMILIES[family].make(rng, hard) for _ in range(n)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_teacher_ends_in_the_programmatic_answer(family):
    for hard in (False, True):
        for seed in range(3):
            for p in problems(family, hard, seed=seed):
                assert p.target == solve(family, p.question), p.question
                assert p.strong.endswith(" " + closing(p.target)) and final_answer(p.strong) == p.target
                assert p.intermediate.endswith(" " + closing(p.target))
                assert p.answer_only == closing(p.target) == f"So the answer is {p.target}."
                assert final_answer(p.flawed) != p.target, p.flawed
                assert len(p.intermediate) < len(p.strong)  # it skips steps


def test_flawed_answers_are_plausible():
    """A slip gives an answer of the right form: an offered option, a real date, the same words."""
    for p in problems("tracking_shuffled_objects", False) + problems("logical_deduction", True):
        assert f"\n{final_answer(p.flawed)} " in p.question
    for p in problems("date_arithmetic", False) + problems("date_arithmetic", True):
        datetime.datetime.strptime(p.flawed.rsplit(" ", 1)[1][:-1], "%m/%d/%Y")
    for p in problems("word_sorting", True):
        assert sorted(final_answer(p.flawed).split()) == sorted(p.target.split())
    for p in problems("boolean_expressions", False):
        assert final_answer(p.flawed) in ("True", "False")


def test_strong_steps_worked_examples():
    rng = random.Random(3)
    p = FAMILIES["multistep_arithmetic"].make(rng, False)
    steps = p.strong.split(". ")[:3]
    assert all(re.fullmatch(r"-?\d+ [-+] -?\d+ = -?\d+", s) for s in steps) and len(p.strong.split(". ")) == 4
    assert mini_orca.explain_addition(677, 996) == (
        "7+6=13, write 3 carry 1. 7+9+1=17, write 7 carry 1. 6+9+1=16, write 6 carry 1. "
        "Write the last carry 1. So the answer is 1673."
    )
    assert mini_orca.addition_question(677, 996) == "What is 677 + 996?"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hard_variants_are_harder(family):
    easy, hard = problems(family, False), problems(family, True)
    assert max(p.size for p in easy) < min(p.size for p in hard)
    assert sum(len(p.strong) for p in hard) > 1.3 * sum(len(p.strong) for p in easy)


def test_in_distribution_examples_fit_the_runs_rows():
    """A strong explanation with its prompt fits configs/runs/mini_orca_explain.gin's 384-byte rows
    (the byte vocabulary: one token per byte, plus BOS and EOS), whatever its system message."""
    template = get_template("orca")
    longest = max(SHORT_BEHAVIOURS.values(), key=len)
    for family in mini_orca.DEFAULT_FAMILIES:
        for p in problems(family, False, n=300):
            assert len(template.prompt(longest, p.question).encode()) + len(p.strong.encode()) + 2 <= 384


def read(path):
    return records.read_records(path)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mini") / "data")
    paths = mini_orca.write_mini_orca(out, num_train=100, num_heldout=20, num_hard=10, intermediate_error_rate=0.3,
                                      seed=5)  # fmt: skip
    return out, paths


def test_layout_and_manifest(written):
    out, paths = written
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    families = list(mini_orca.DEFAULT_FAMILIES)
    assert len(families) >= 6
    assert files == sorted(
        ["train_strong.jsonl", "train_intermediate.jsonl", "train_answer_only.jsonl", "heldout.jsonl", "manifest.json"]
        + [f"bbh/{f}.json" for f in families] + [f"bbh_hard/{f}.json" for f in families]
    )  # fmt: skip
    manifest = json.load(open(paths["manifest"]))
    assert manifest["flags"] == {"seed": 5, "families": families, "num_train": 100, "num_heldout": 20, "num_hard": 10,
                                 "intermediate_error_rate": 0.3}  # fmt: skip
    assert all(manifest["families"][f]["intermediate_wrong"] == 30 for f in families)
    heldout = read(paths["heldout"])
    assert len(heldout) == 20 * len(families)
    for f in families:
        bbh = json.load(open(paths[f"bbh/{f}"]))["examples"]
        hard = json.load(open(paths[f"bbh_hard/{f}"]))["examples"]
        assert len(bbh) == 20 and len(hard) == 10 and set(bbh[0]) == {"input", "target"}
        mine = [r for r in heldout if r.id.startswith(f"mini_orca.{f}.heldout.")]
        assert [r.question for r in mine] == [ex["input"] for ex in bbh]
        assert all(r.response.endswith(closing(ex["target"])) for r, ex in zip(mine, bbh, strict=True))
        assert all(ex["target"] == solve(f, ex["input"]) for ex in bbh + hard)


def test_teachers_share_questions_and_the_intermediate_error_rate(written):
    _, paths = written
    strong, intermediate, answer_only = (read(paths[f"train_{t}"]) for t in mini_orca.TEACHERS)
    assert len(strong) == 100 * len(mini_orca.DEFAULT_FAMILIES)
    wrong: dict[str, int] = {}
    for s, i, a in zip(strong, intermediate, answer_only, strict=True):
        assert (s.id, s.system_prompt, s.question) == (i.id, i.system_prompt, i.question) == (
            a.id, a.system_prompt, a.question)  # fmt: skip
        family = s.id.split(".")[1]
        assert re.fullmatch(rf"mini_orca\.{family}\.train\.\d+", s.id)
        target = final_answer(s.response)
        assert target == solve(family, s.question)
        assert a.response == f"So the answer is {target}."
        wrong[family] = wrong.get(family, 0) + (final_answer(i.response) != target)
    assert wrong == {f: 30 for f in mini_orca.DEFAULT_FAMILIES}  # exactly round(0.3 * 100) per family
    # The families are mixed in the files, not in runs of one family.
    first = [r.id.split(".")[1] for r in strong[:30]]
    assert len(set(first)) == len(mini_orca.DEFAULT_FAMILIES)


def test_heldout_questions_are_never_trained_on(written):
    _, paths = written
    train = {r.question for r in read(paths["train_strong"])}
    for f in mini_orca.DEFAULT_FAMILIES:
        for folder in ("bbh", "bbh_hard"):
            held = [ex["input"] for ex in json.load(open(paths[f"{folder}/{f}"]))["examples"]]
            assert len(set(held)) == len(held) and not set(held) & train


def test_system_messages_follow_each_familys_orca_collection(written):
    _, paths = written
    by_family: dict[str, set[str]] = {}
    for r in read(paths["train_strong"]) + read(paths["heldout"]):
        by_family.setdefault(r.id.split(".")[1], set()).add(r.system_prompt)
    for name, used in by_family.items():
        family = FAMILIES[name]
        behaviours = set(system_messages.COLLECTIONS[family.collection]) | {1}
        if not family.make(random.Random(0), False).question.count("\nOptions:\n"):
            behaviours -= system_messages.MULTIPLE_CHOICE_ONLY
        assert used == {SHORT_BEHAVIOURS[b] for b in behaviours}, name  # every allowed message, no other
        assert "" in used  # the evaluation's empty message is trained on in every family
    assert SHORT_BEHAVIOURS[8] in by_family["logical_deduction"] and SHORT_BEHAVIOURS[8] not in by_family[
        "boolean_expressions"]  # fmt: skip


def test_deterministic_per_seed_and_families_independent(tmp_path):
    def write(name, **kw):
        return mini_orca.write_mini_orca(str(tmp_path / name), num_train=30, num_heldout=5, **kw)

    a, b, c = write("a", seed=1), write("b", seed=1), write("c", seed=2)
    for key in a:
        assert open(a[key], "rb").read() == open(b[key], "rb").read(), key
    assert open(a["train_strong"]).read() != open(c["train_strong"]).read()
    only = write("d", seed=1, families=["word_sorting", "addition"])
    assert open(only["bbh/word_sorting"]).read() == open(a["bbh/word_sorting"]).read()
    with pytest.raises(ValueError, match="unknown families"):
        write("e", families=["sudoku"])


def test_too_few_distinct_questions_is_an_error():
    def make(rng, hard):
        q = str(rng.randrange(4))
        return mini_orca.Problem(q, q, closing(q), closing(q), closing("x"), 1)

    family = mini_orca.Family("four", make, "cot", "a digit", ("", ""))
    assert len(writer.draw(family, random.Random(0), 4, hard=False, exclude=set())) == 4
    with pytest.raises(ValueError, match="only 4 distinct questions"):
        writer.draw(family, random.Random(0), 5, hard=False, exclude=set())


def test_error_rate_zero_and_one(tmp_path):
    for rate, wrong in ((0.0, 0), (1.0, 12)):
        paths = mini_orca.write_mini_orca(str(tmp_path / str(rate)), num_train=12, num_heldout=2,
                                          families=["date_arithmetic"], intermediate_error_rate=rate)  # fmt: skip
        pairs = zip(read(paths["train_strong"]), read(paths["train_intermediate"]), strict=True)
        assert sum(final_answer(i.response) != final_answer(s.response) for s, i in pairs) == wrong


def test_cli_writes_the_layout_and_refuses_bad_flags(tmp_path, capsys):
    out = tmp_path / "data"
    data_main(["generate-mini", "--out", str(out), "--num_train", "10", "--num_heldout", "3", "--num_hard", "2",
               "--families", "boolean_expressions,word_sorting", "--intermediate_error_rate", "0.5",
               "--seed", "4"])  # fmt: skip
    assert "2 families x (10 train, 3 held-out, 2 hard)" in capsys.readouterr().out
    assert sorted(os.listdir(out / "bbh_hard")) == ["boolean_expressions.json", "word_sorting.json"]
    assert len(read(str(out / "train_answer_only.jsonl"))) == 20
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["flags"]["intermediate_error_rate"] == 0.5 and manifest["flags"]["seed"] == 4
    for argv in (["--families", "sudoku"], ["--intermediate_error_rate", "1.5"]):
        with pytest.raises(SystemExit) as e:
            data_main(["generate-mini", "--out", str(tmp_path / "x"), *argv])
        assert e.value.code == 2
    with pytest.raises(SystemExit):
        data_main(["generate-mini", "--out", str(out)])  # not empty, no --overwrite
    data_main(["generate-mini", "--out", str(out), "--num_train", "5", "--families", "addition", "--overwrite"])
    assert len(read(str(out / "train_strong.jsonl"))) == 5
    assert os.listdir(out / "bbh") == ["addition.json"]  # the earlier families' files are gone


def run_config(name: str, **macros) -> dict:
    """The settings that make up a run's compute, as the binary would parse them."""
    from orca_jax.train import configurables

    def value(parameter):
        v = gin.query_parameter(parameter)
        while isinstance(v, gin.config.ConfigurableReference) and v.selector == "gin.macro":
            v = gin_cli.macro_value(v.scopes[0])
        return v

    gin_cli.register({**configurables(), "path_join": gin_cli.path_join})
    bindings = [f"{k} = {gin_cli.gin_value(v)}" for k, v in macros.items()]
    gin_cli.parse_gin([os.path.join(REPO, "configs", "runs", name)], bindings)
    try:
        settings = {
            "steps": value("TrainConfig.num_steps"),
            "batch": value("TrainConfig.batch_size"),
            "rows": value("DataConfig.sequence_length"),
            "model": {k: value(f"ModelConfig.{k}") for k in ("d_model", "num_layers", "num_heads", "mlp_dim")},
            "optimizer": {k: value(f"OptimizerConfig.{k}") for k in ("learning_rate", "warmup_steps", "decay")},
            "train_file": gin_cli.macro_value("TRAIN_FILE"),
            "seed": value("TrainConfig.seed"),
        }
        settings["init_from"] = value("train.init_from") if name.endswith("stage2.gin") else ""
        return settings
    finally:
        gin.clear_config()


def test_the_three_runs_have_equal_compute():
    explain = run_config("mini_orca_explain.gin", MODEL_DIR="/tmp/x")
    answer_only = run_config("mini_orca_answer_only.gin", MODEL_DIR="/tmp/x")
    stage1 = run_config("mini_orca_progressive.gin", MODEL_DIR="/tmp/x")
    stage2 = run_config("mini_orca_progressive_stage2.gin", MODEL_DIR="/tmp/x", STAGE1_DIR="/tmp/s1", SEED="3")
    demo = run_config("mini_orca.gin", MODEL_DIR="/tmp/x")
    assert demo == explain
    assert [r["train_file"] for r in (explain, answer_only, stage1, stage2)] == [
        "train_strong.jsonl", "train_answer_only.jsonl", "train_intermediate.jsonl", "train_strong.jsonl"]  # fmt: skip
    assert stage1["steps"] + stage2["steps"] == explain["steps"] == answer_only["steps"]
    for key in ("batch", "rows", "model", "optimizer"):
        assert explain[key] == answer_only[key] == stage1[key] == stage2[key], key
    assert stage2["seed"] == 3 and stage2["init_from"] == "/tmp/s1"
