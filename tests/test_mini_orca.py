"""Mini-Orca's task families, three teachers, tokenizer, files and run configs.

Every family's answers are checked against an independent solver that reads only the question text,
so a wrong explanation and a wrong target cannot agree by construction; and every line of a strong
explanation is checked to follow from the line before it and one item of the question (the property
that makes the explanations learnable by the mini student).
"""

import json
import os
import random
import re

import gin
import pytest
import sentencepiece as spm

from orca_jax.cli import gin_flags
from orca_jax.cli.data import main as data_main
from orca_jax.data import readers, system_messages
from orca_jax.datagen import mini_orca
from orca_jax.datagen.mini_orca import FAMILIES, SHORT_BEHAVIOURS, closing, writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = r"[A-Z][a-z]{2}"


def final_answer(response: str) -> str:
    """What follows the last "So the answer is", without the closing period."""
    assert response.endswith(".") and "So the answer is " in response, response
    return response.rsplit("So the answer is ", 1)[1][:-1]


def option_letter(question: str, text: str) -> str:
    options = re.findall(r"^\(([A-E])\) (.+)$", question, re.M)
    return next(f"({letter})" for letter, option in options if option == text)


def solve(family: str, question: str) -> str:
    """The answer, worked out from the question text alone."""
    if family == "addition":
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", question).groups())
        return str(a + b)
    if family == "boolean_expressions":
        assert re.fullmatch(r"(True|False|not|and|or|[() ])+ is", question)
        return str(eval(question[:-3]))
    if family == "web_of_lies":
        m = re.fullmatch(
            rf"Question: ({NAMES}) (lies|tells the truth)\. (.+) Does ({NAMES}) tell the truth\?", question
        )
        values = {m.group(1): m.group(2) == "tells the truth"}
        for speaker, about, claim in re.findall(rf"({NAMES}) says ({NAMES}) (lies|tells the truth)\.", m.group(3)):
            values[speaker] = (claim == "tells the truth") == values[about]
        return "Yes" if values[m.group(4)] else "No"
    if family == "tracking_shuffled_objects":
        holdings = dict(re.findall(r"(\w+) has (\w+)[,.]", question.split(" Swaps:")[0] + "."))
        for a, b in re.findall(r"\d\. (\w+)-(\w+)", question.split("Swaps: ")[1].split(". At the end")[0]):
            holdings[a], holdings[b] = holdings[b], holdings[a]
        who = re.search(r"At the end, (\w+) has", question).group(1)
        return option_letter(question, holdings[who])
    raise AssertionError(family)


def problems(family: str, hard: bool, n: int = 150, seed: int = 0):
    rng = random.Random(f"test/{family}/{seed}")
    return [FAMILIES[family].make(rng, hard) for _ in range(n)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_teacher_ends_in_the_programmatic_answer(family):
    for hard in (False, True):
        for seed in range(3):
            drawn = problems(family, hard, seed=seed)
            # The intermediate teacher skips steps (a one-step question has none to skip).
            assert sum(len(p.intermediate) for p in drawn) < 0.9 * sum(len(p.strong) for p in drawn)
            for p in drawn:
                assert p.target == solve(family, p.question), p.question
                assert p.strong.endswith(" " + closing(p.target)) and final_answer(p.strong) == p.target
                assert p.intermediate.endswith(" " + closing(p.target))
                assert p.answer_only == closing(p.target) == f"So the answer is {p.target}."
                assert final_answer(p.flawed) != p.target, p.flawed
                assert len(p.intermediate) <= len(p.strong)


def test_flawed_answers_are_plausible():
    """A slip gives an answer of the right form: an offered option, a truth value, a number."""
    for p in problems("tracking_shuffled_objects", False):
        assert f"\n{final_answer(p.flawed)} " in p.question
    for p in problems("boolean_expressions", False):
        assert final_answer(p.flawed) in ("True", "False")
    for p in problems("web_of_lies", True):
        assert final_answer(p.flawed) in ("Yes", "No")
    for p in problems("addition", False):
        assert final_answer(p.flawed).isdigit()


def test_worked_examples():
    assert mini_orca.explain_addition(677, 996) == (
        "677: 6c 7b 7a. 996: 9c 9b 6a. a: 7+6+0=13 -> 3. b: 7+9+1=17 -> 73. c: 6+9+1=16 -> 673. "
        "carry 1 -> 1673. So the answer is 1673."
    )
    assert mini_orca.addition_question(677, 996) == "What is 677 + 996?"
    assert (
        mini_orca.explain_addition(5, 40)
        == "5: 0b 5a. 40: 4b 0a. a: 5+0+0=5 -> 5. b: 0+4+0=4 -> 45. So the answer is 45."
    )


def test_addition_steps_follow_from_the_line_before():
    """Each column reads its two digits by column name from the restated numbers, adds the carry the
    previous line made, and writes the answer so far with the new digit in front."""
    for p in problems("addition", False, n=300) + problems("addition", True):
        a, b = re.fullmatch(r"What is (\d+) \+ (\d+)\?", p.question).groups()
        lines = p.strong.split(". ")
        width = max(len(a), len(b))
        names = {}
        for number, line in zip((a, b), lines[:2], strict=True):
            head, digits = line.split(": ")
            assert head == number
            pairs = [(d[0], d[1]) for d in digits.rstrip(".").split()]
            assert [c for _, c in pairs] == list(reversed(mini_orca.arithmetic.COLUMNS[:width]))
            assert "".join(d for d, _ in pairs) == number.zfill(width)
            names[number] = {c: int(d) for d, c in pairs}
        carry, written = 0, ""
        for column, line in zip(mini_orca.arithmetic.COLUMNS, lines[2 : 2 + width], strict=False):
            m = re.fullmatch(rf"{column}: (\d)\+(\d)\+(\d)=(\d+) -> (\d+)\.?", line)
            x, y, c, total, now = (int(g) if i < 4 else g for i, g in enumerate(m.groups()))
            assert (x, y, c) == (names[a][column], names[b][column], carry) and total == x + y + c
            assert now == str(total % 10) + written
            carry, written = total // 10, now
        rest = lines[2 + width :]
        if carry:
            assert rest[0] == f"carry 1 -> 1{written}"
            written = "1" + written
        assert final_answer(p.strong) == written


def test_boolean_rewrites_make_one_operation_at_a_time():
    for p in problems("boolean_expressions", False, n=300) + problems("boolean_expressions", True):
        chain = p.strong.rsplit(". So the answer is", 1)[0].split(" = ")
        assert chain[0] == p.question[: -len(" is")] and chain[-1] == p.target
        for before, after in zip(chain, chain[1:], strict=False):
            # One operation fewer, and the same value.
            ops = lambda s: len(re.findall(r"\b(?:not|and|or)\b", s))  # noqa: E731
            assert ops(after) == ops(before) - 1, (before, after)
            assert eval(after) == eval(before)


def test_web_of_lies_steps_restate_one_claim_each():
    for p in problems("web_of_lies", False, n=300) + problems("web_of_lies", True):
        claims = re.findall(rf"{NAMES} says {NAMES} (?:lies|tells the truth)", p.question)
        steps = p.strong.rsplit(" So the answer is", 1)[0].split(". ")[1:]
        assert len(steps) == len(claims)
        for claim, step in zip(claims, steps, strict=True):
            assert step.startswith(claim + ", so " + claim.split()[0] + " ")


def test_tracking_lines_swap_two_objects_of_the_line_before():
    for p in problems("tracking_shuffled_objects", False, n=300) + problems("tracking_shuffled_objects", True):
        swaps = re.findall(r"\d\. (\w+-\w+)", p.question.split("Swaps: ")[1].split(". At the end")[0])
        lines = re.findall(r"(\d)\. (?:Start|(\w+-\w+)): ((?:\w+ \w+, )*\w+ \w+)\.", p.strong)
        assert [int(n) for n, _, _ in lines] == list(range(len(swaps) + 1))
        states = [dict(item.split() for item in state.split(", ")) for _, _, state in lines]
        for swap, (_, written, _), before, after in zip(swaps, lines[1:], states[:-1], states[1:], strict=True):
            a, b = swap.split("-")
            assert written == swap and after == {**before, a: before[b], b: before[a]}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hard_variants_are_the_longest_of_the_training_range(family):
    easy, hard = problems(family, False, n=400), problems(family, True)
    assert {p.size for p in hard} == {max(p.size for p in easy)}
    assert sum(len(p.strong) for p in hard) / len(hard) > 1.15 * sum(len(p.strong) for p in easy) / len(easy)


def read(path):
    return readers.read_records(path)


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
    assert families == ["addition", "boolean_expressions", "web_of_lies"]
    assert files == sorted(
        ["train_strong.jsonl", "train_intermediate.jsonl", "train_answer_only.jsonl", "heldout.jsonl", "manifest.json",
         "tokenizer.model"] + [f"bbh/{f}.json" for f in families] + [f"bbh_hard/{f}.json" for f in families]
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


def test_the_tokenizer_keeps_words_whole_digits_apart_and_zero_free(written):
    _, paths = written
    vocab = spm.SentencePieceProcessor(model_file=paths["tokenizer"])
    assert (vocab.unk_id(), vocab.bos_id(), vocab.eos_id(), vocab.pad_id()) == (0, 1, 2, -1)
    assert vocab.get_piece_size() <= mini_orca.tokenizer.VOCAB_SIZE
    for r in read(paths["train_strong"])[:50]:
        for text in (r.question, r.response):
            ids = vocab.encode(text)
            assert vocab.decode(ids) == text and 0 not in ids
    pieces = vocab.encode("What is 563 + 986?", out_type=str)
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["5", "6", "3", "9", "8", "6"]
    assert len(vocab.encode(" tells the truth")) <= 3
    assert vocab.decode(vocab.encode("Ünïcode ✓ text it never saw")) == "Ünïcode ✓ text it never saw"  # bytes


def test_every_question_fits_a_row_and_a_long_one_is_refused(written, tmp_path):
    _, paths = written
    too_long = mini_orca.Problem("What is 1 + 1?", "2", "2 " * 300 + closing("2"), closing("2"), closing("3"), 1)
    with pytest.raises(ValueError, match="over the 256 of a row"):
        writer.check_rows(paths["tokenizer"], {"addition": [too_long]})
    # The generator checks every question it writes (with its own tokenizer, fitted to its families).
    every = mini_orca.write_mini_orca(str(tmp_path / "all"), num_train=300, num_heldout=5, families=sorted(FAMILIES))
    writer.check_rows(every["tokenizer"], {family: problems(family, True, n=50) for family in FAMILIES})


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


def test_system_messages_follow_each_familys_orca_collection(tmp_path):
    paths = mini_orca.write_mini_orca(str(tmp_path / "d"), num_train=200, num_heldout=5, seed=5,
                                      families=["boolean_expressions", "tracking_shuffled_objects"])  # fmt: skip
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
    # Multiple-choice messages go only to the family with options.
    assert SHORT_BEHAVIOURS[8] in by_family["tracking_shuffled_objects"]
    assert SHORT_BEHAVIOURS[8] not in by_family["boolean_expressions"]


def test_deterministic_per_seed_and_families_independent(tmp_path):
    def write(name, **kw):
        return mini_orca.write_mini_orca(str(tmp_path / name), num_train=30, num_heldout=5, **kw)

    a, b, c = write("a", seed=1), write("b", seed=1), write("c", seed=2)
    for key in a:
        assert open(a[key], "rb").read() == open(b[key], "rb").read(), key  # the tokenizer too
    assert open(a["train_strong"]).read() != open(c["train_strong"]).read()
    only = write("d", seed=1, families=["web_of_lies", "tracking_shuffled_objects"])
    assert open(only["bbh/web_of_lies"]).read() == open(a["bbh/web_of_lies"]).read()
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
                                          families=["addition"], intermediate_error_rate=rate)  # fmt: skip
        pairs = zip(read(paths["train_strong"]), read(paths["train_intermediate"]), strict=True)
        assert sum(final_answer(i.response) != final_answer(s.response) for s, i in pairs) == wrong


def test_cli_writes_the_layout_and_refuses_bad_flags(tmp_path, capsys):
    out = tmp_path / "data"
    data_main(["generate-mini", "--out", str(out), "--num_train", "10", "--num_heldout", "3", "--num_hard", "2",
               "--families", "boolean_expressions,web_of_lies", "--intermediate_error_rate", "0.5",
               "--seed", "4"])  # fmt: skip
    assert "2 families x (10 train, 3 held-out, 2 hard)" in capsys.readouterr().out
    assert sorted(os.listdir(out / "bbh_hard")) == ["boolean_expressions.json", "web_of_lies.json"]
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
    from orca_jax.cli.train import configurables

    def value(parameter):
        v = gin.query_parameter(parameter)
        while isinstance(v, gin.config.ConfigurableReference) and v.selector == "gin.macro":
            v = gin_flags.macro_value(v.scopes[0])
        return v

    gin_flags.register({**configurables(), "path_join": gin_flags.path_join})
    bindings = [f"{k} = {gin_flags.gin_value(v)}" for k, v in macros.items()]
    gin_flags.parse_gin([os.path.join(REPO, "configs", "runs", name)], bindings)
    try:
        settings = {
            "steps": value("TrainConfig.num_steps"),
            "batch": value("TrainConfig.batch_size"),
            "rows": value("DataConfig.sequence_length"),
            "model": {
                k: value(f"ModelConfig.{k}") for k in ("d_model", "num_layers", "num_heads", "mlp_dim", "vocab_size")
            },  # fmt: skip
            "optimizer": {k: value(f"OptimizerConfig.{k}") for k in ("learning_rate", "warmup_steps", "decay")},
            "train_file": gin_flags.macro_value("TRAIN_FILE"),
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
    # Every question of the study fits the runs' rows, and the model covers the tokenizer's ids.
    assert explain["rows"] == mini_orca.base.ROW_TOKENS
    assert explain["model"]["vocab_size"] >= mini_orca.tokenizer.VOCAB_SIZE


def test_the_package_docstrings_worked_examples_are_what_the_teachers_write():
    from orca_jax.datagen.mini_orca import arithmetic, logic

    doc = " ".join(mini_orca.__doc__.split())
    for text in (
        arithmetic.explain_addition(478, 718),
        arithmetic._column_work(478, 718, running=False),
        "b: 7+1+0=8. c: 4+7+0=11. carry 1. So the answer is 1186.",
    ):
        assert text in doc or text.split(". ", 1)[1] in doc, text
    assert arithmetic._column_work(478, 718, running=False, slip=1).endswith(
        "b: 7+1+0=8. c: 4+7+0=11. carry 1. So the answer is 1186.")  # fmt: skip
    root = ("or", ("not", ("and", ("lit", True), ("lit", False))), ("lit", True))
    question = logic._text(root)
    for rewrites in (logic._rewrites(root), logic._rewrites(root, every=2), logic._rewrites(root, every=2, slip=2)):
        assert f"{question} = {' = '.join(rewrites)}. So the answer is {rewrites[-1]}." in doc
